//! Fast JSON text writing for the hot path (log chunks): string escaping that
//! copies clean runs whole and looks at eight bytes at a time.
//!
//! The output is byte-for-byte what serde_json writes, which a test checks.

const LOW: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// A mask with the high bit set in the first byte of `word` (little-endian
/// order) that is a control byte (< 0x20), `"` or `\`, or zero if none is.
/// Bits above the first hit may be set spuriously (borrows propagate up), so
/// only the lowest set bit is meaningful.
#[inline]
fn escape_mask(word: u64) -> u64 {
    let below_space = word.wrapping_sub(0x20 * LOW) & !word & HIGH;
    let quote = (word ^ (0x22 * LOW)).wrapping_sub(LOW) & !(word ^ (0x22 * LOW)) & HIGH;
    let backslash = (word ^ (0x5C * LOW)).wrapping_sub(LOW) & !(word ^ (0x5C * LOW)) & HIGH;
    below_space | quote | backslash
}

#[inline]
fn escape_byte(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Appends `text` as a JSON string (with quotes).
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0; // first byte not yet copied
    let mut i = 0;
    while i + 8 <= bytes.len() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[i..i + 8]);
        let mask = escape_mask(u64::from_le_bytes(word));
        if mask == 0 {
            i += 8;
            continue;
        }
        // Straight to the first byte that needs escaping.
        let at = i + (mask.trailing_zeros() / 8) as usize;
        out.extend_from_slice(&bytes[start..at]);
        push_escape(out, bytes[at]);
        start = at + 1;
        i = at + 1;
    }
    while i < bytes.len() {
        if escape_byte(bytes[i]) {
            out.extend_from_slice(&bytes[start..i]);
            push_escape(out, bytes[i]);
            start = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn push_escape(out: &mut Vec<u8>, b: u8) {
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
        for i in 0..18 {
            for j in i..18 {
                for (a, b) in specials.iter().zip(specials.iter().rev()) {
                    let mut chars: Vec<char> = "abcdefghijklmnopqr".chars().collect();
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
