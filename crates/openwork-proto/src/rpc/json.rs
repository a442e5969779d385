//! Fast JSON strings for the hot path (log chunks): escaping and finding the
//! end of a clean run sixteen bytes at a time (SSE2 on x86_64, eight-byte
//! words elsewhere).
//!
//! The output is byte-for-byte what serde_json writes, which a test checks.

/// Bytes looked at per step.
const BLOCK: usize = 16;

fn escape_byte(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Bit `k` set when byte `k` of the block must be escaped.
#[inline]
fn escapes_in_block(block: &[u8; BLOCK]) -> u32 {
    scan_block(block).escapes
}

/// What one block holds, a bit per byte.
struct BlockScan {
    /// Bytes to escape.
    escapes: u32,
    /// Bytes outside ASCII (parts of longer UTF-8 sequences, or not UTF-8).
    non_ascii: u32,
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn scan_block(block: &[u8; BLOCK]) -> BlockScan {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of every x86_64 CPU, and the unaligned load reads
    // exactly the block's 16 bytes.
    unsafe {
        let v = _mm_loadu_si128(block.as_ptr().cast());
        let control = _mm_cmpeq_epi8(_mm_max_epu8(v, _mm_set1_epi8(0x1F)), _mm_set1_epi8(0x1F));
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        BlockScan {
            escapes: _mm_movemask_epi8(_mm_or_si128(control, _mm_or_si128(quote, backslash)))
                as u32,
            non_ascii: _mm_movemask_epi8(v) as u32,
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn scan_block(block: &[u8; BLOCK]) -> BlockScan {
    BlockScan {
        escapes: escapes_in_block_by_words(block),
        non_ascii: block
            .iter()
            .enumerate()
            .fold(0, |m, (k, &b)| m | (u32::from(b >> 7) << k)),
    }
}

/// The portable form of `escapes_in_block`: two eight-byte words, each byte
/// tested without carries crossing into its neighbours, so every bit is exact.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline]
fn escapes_in_block_by_words(block: &[u8; BLOCK]) -> u32 {
    const LOW7: u64 = 0x7F7F_7F7F_7F7F_7F7F;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const EACH: u64 = 0x0101_0101_0101_0101;
    // High bit of each byte that is zero.
    let zero = |w: u64| !(((w & LOW7) + LOW7) | w | LOW7);
    let word_bits = |w: u64| {
        // High bit set where the byte is >= 0x20 (no carry leaves a byte: 0x7F + 0x60 < 0x100).
        let at_least_space = ((w & LOW7) + 0x60 * EACH) | w;
        let hits = (!at_least_space & HIGH) | zero(w ^ (0x22 * EACH)) | zero(w ^ (0x5C * EACH));
        // One bit per byte: gather the high bits into the top byte.
        (((hits >> 7).wrapping_mul(0x0102_0408_1020_4080)) >> 56) as u32
    };
    let (lo, hi) = block.split_at(8);
    let word = |half: &[u8]| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(half);
        u64::from_le_bytes(bytes)
    };
    word_bits(word(lo)) | (word_bits(word(hi)) << 8)
}

/// How many leading bytes of `bytes` need no escaping: the length of the
/// run a JSON string can hold as it is (up to a quote, backslash or control byte).
pub fn clean_run_len(bytes: &[u8]) -> usize {
    let (blocks, rest) = bytes.as_chunks::<BLOCK>();
    for (n, block) in blocks.iter().enumerate() {
        let hits = escapes_in_block(block);
        if hits != 0 {
            return n * BLOCK + hits.trailing_zeros() as usize;
        }
    }
    let tail = bytes.len() - rest.len();
    rest.iter()
        .position(|&b| escape_byte(b))
        .map_or(bytes.len(), |k| tail + k)
}

/// Appends the clean run that starts `bytes` (see `clean_run_len`) to `out`
/// and returns its length.
///
/// Each step copies a whole block and then drops what follows the first byte
/// to escape, so that a run costs a fixed-size copy per sixteen bytes rather
/// than a call to copy its exact length: log output is lines of a few dozen
/// bytes, each ended by a newline to escape.
pub fn copy_clean_run(out: &mut Vec<u8>, bytes: &[u8]) -> usize {
    let mut at = 0;
    while let Some(block) = bytes[at..].first_chunk::<BLOCK>() {
        let hits = escapes_in_block(block);
        out.extend_from_slice(block);
        if hits != 0 {
            let clean = hits.trailing_zeros() as usize;
            out.truncate(out.len() - (BLOCK - clean));
            return at + clean;
        }
        at += BLOCK;
    }
    // Less than a block left.
    let rest = &bytes[at..];
    let clean = clean_run_len(rest);
    out.extend_from_slice(&rest[..clean]);
    at + clean
}

/// Appends `text` as a JSON string (with quotes).
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    write_escaped(out, text.as_bytes(), true);
}

/// Appends `bytes` as a JSON string (with quotes) when they are UTF-8, and
/// returns false, leaving `out` as it was, when they are not.
///
/// Checking as it escapes costs one more bit test per block: output that is
/// all ASCII is never read a second time, and the rest is checked once from
/// its first byte outside ASCII.
pub fn write_utf8(out: &mut Vec<u8>, bytes: &[u8]) -> bool {
    write_escaped(out, bytes, false)
}

/// `write_str`, checking `bytes` for UTF-8 first unless `checked`.
fn write_escaped(out: &mut Vec<u8>, bytes: &[u8], mut checked: bool) -> bool {
    let start_len = out.len();
    let valid_from = |at: usize| std::str::from_utf8(&bytes[at..]).is_ok();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0; // first byte not yet copied
    let (blocks, rest) = bytes.as_chunks::<BLOCK>();
    for (n, block) in blocks.iter().enumerate() {
        let scan = scan_block(block);
        // Everything before this block is ASCII, so it starts a character.
        if !checked && scan.non_ascii != 0 {
            if !valid_from(n * BLOCK) {
                out.truncate(start_len);
                return false;
            }
            checked = true;
        }
        let mut hits = scan.escapes;
        while hits != 0 {
            let at = n * BLOCK + hits.trailing_zeros() as usize;
            out.extend_from_slice(&bytes[start..at]);
            push_escape(out, bytes[at]);
            start = at + 1;
            hits &= hits - 1;
        }
    }
    let tail = bytes.len() - rest.len();
    if !checked && !rest.is_ascii() && !valid_from(tail) {
        out.truncate(start_len);
        return false;
    }
    for (at, &b) in bytes.iter().enumerate().skip(tail) {
        if escape_byte(b) {
            out.extend_from_slice(&bytes[start..at]);
            push_escape(out, b);
            start = at + 1;
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
    true
}

/// Appends the escape of `b`: a newline, which ends almost every run in log
/// output, without a call (forced: left to itself, LLVM folds the rare
/// escapes back in and calls the whole function for every newline).
#[inline(always)]
fn push_escape(out: &mut Vec<u8>, b: u8) {
    if b == b'\n' {
        out.extend_from_slice(b"\\n");
        return;
    }
    push_other_escape(out, b);
}

/// Appends the escape of any byte that needs one.
#[inline(never)]
fn push_other_escape(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0C => out.extend_from_slice(b"\\f"),
        _ => out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[(b >> 4) as usize],
            HEX[(b & 15) as usize],
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(s: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn block_scanners_flag_exactly_the_bytes_to_escape_and_those_outside_ascii() {
        for b in 0u8..=0xFF {
            for at in 0..BLOCK {
                let mut block = [b'a'; BLOCK];
                block[at] = b;
                // A neighbour that borrows or carries must not disturb the result.
                block[(at + 1) % BLOCK] = [0x00, 0x20, 0x7F, 0x80, 0xFF][usize::from(b) % 5];
                let want = (0..BLOCK)
                    .filter(|&k| escape_byte(block[k]))
                    .fold(0u32, |m, k| m | 1 << k);
                assert_eq!(escapes_in_block(&block), want, "{block:x?}");
                assert_eq!(escapes_in_block_by_words(&block), want, "{block:x?}");
                let non_ascii = (0..BLOCK)
                    .filter(|&k| !block[k].is_ascii())
                    .fold(0u32, |m, k| m | 1 << k);
                assert_eq!(scan_block(&block).non_ascii, non_ascii, "{block:x?}");
            }
        }
    }

    #[test]
    fn clean_runs_end_at_the_first_byte_to_escape() {
        for len in 0..40 {
            for at in 0..=len {
                let mut bytes = vec![b'x'; len];
                if at < len {
                    bytes[at] = b'"';
                }
                assert_eq!(clean_run_len(&bytes), at, "{len} bytes, quote at {at}");
            }
        }
        assert_eq!(clean_run_len("é\u{1}".as_bytes()), 2);
    }

    #[test]
    fn copying_a_clean_run_appends_exactly_the_run() {
        for len in 0..40 {
            for at in 0..=len {
                for special in [b'"', b'\\', b'\n', 0x00, 0x1F] {
                    // Letters and a multi-byte character: both are clean.
                    let mut bytes: Vec<u8> = "abcdefghijklmnopqrstuvwxyz\u{e9}0123456789abcdef"
                        .bytes()
                        .take(len)
                        .collect();
                    if at < len {
                        bytes[at] = special;
                    }
                    let mut out = b"kept".to_vec();
                    let copied = copy_clean_run(&mut out, &bytes);
                    assert_eq!(copied, at, "{bytes:x?}");
                    assert_eq!(out, [&b"kept"[..], &bytes[..at]].concat(), "{bytes:x?}");
                }
            }
        }
    }

    #[test]
    fn utf8_is_checked_while_escaping_wherever_it_breaks() {
        let pieces: [&[u8]; 6] = [
            "é".as_bytes(),
            "😀".as_bytes(),
            &[0xFF],
            &[0xC3],             // a lead byte with nothing after it
            &[0xE2, 0x82],       // a sequence cut short
            &[0xED, 0xA0, 0x80], // a surrogate, which UTF-8 forbids
        ];
        for piece in pieces {
            for len in [0usize, 5, 15, 16, 17, 31, 40] {
                for at in [0, len / 2, len] {
                    let mut bytes = b"abc\"def\nghijklmnopqrstuvwxyz0123456789abcd"[..len].to_vec();
                    bytes.splice(at..at, piece.iter().copied());
                    let mut out = b"kept".to_vec();
                    let written = write_utf8(&mut out, &bytes);
                    match std::str::from_utf8(&bytes) {
                        Ok(text) => {
                            assert!(written, "{bytes:x?}");
                            let mut want = b"kept".to_vec();
                            write_str(&mut want, text);
                            assert_eq!(out, want, "{bytes:x?}");
                        }
                        Err(_) => {
                            assert!(!written, "{bytes:x?}");
                            assert_eq!(out, b"kept", "{bytes:x?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn matches_serde_json_on_every_byte_and_position() {
        for b in 0u8..=0x7F {
            for pad in 0..10 {
                let s = format!("{}{}{}", "x".repeat(pad), b as char, "y".repeat(9 - pad));
                assert_eq!(
                    ours(&s),
                    serde_json::to_string(&s).unwrap(),
                    "byte {b:#x} at {pad}"
                );
            }
        }
        // Two bytes to escape at every pair of positions, across word edges.
        let specials = ['\n', '"', '\\', '\u{1}', '\u{1f}'];
        for i in 0..34 {
            for j in i..34 {
                for (a, b) in specials.iter().zip(specials.iter().rev()) {
                    let mut chars: Vec<char> =
                        "abcdefghijklmnopqrstuvwxyz01234567".chars().collect();
                    chars[i] = *a;
                    chars[j] = *b;
                    let s: String = chars.into_iter().collect();
                    assert_eq!(ours(&s), serde_json::to_string(&s).unwrap(), "{s:?}");
                }
            }
        }
        for s in [
            "",
            "é",
            "naïve \u{1F600} text",
            "\u{7F}\u{80}\u{FFFD}",
            "a\"b\\c\nd\re\tf\u{8}\u{c}\u{1}",
        ] {
            assert_eq!(ours(s), serde_json::to_string(s).unwrap());
        }
    }
}
