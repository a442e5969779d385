//! Fast JSON text writing for the hot path (log chunks): string escaping that
//! copies clean runs whole and looks at eight bytes at a time.
//!
//! The output is byte-for-byte what serde_json writes, which a test checks.

const LOW: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `word` is a control byte (< 0x20), `"` or `\`.
#[inline]
fn needs_escape(word: u64) -> bool {
    let below_space = word.wrapping_sub(0x20 * LOW) & !word & HIGH;
    let quote = (word ^ (0x22 * LOW)).wrapping_sub(LOW) & !(word ^ (0x22 * LOW)) & HIGH;
    let backslash = (word ^ (0x5C * LOW)).wrapping_sub(LOW) & !(word ^ (0x5C * LOW)) & HIGH;
    (below_space | quote | backslash) != 0
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
    while i < bytes.len() {
        if i + 8 <= bytes.len() {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[i..i + 8]);
            if !needs_escape(u64::from_le_bytes(word)) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        if escape_byte(b) {
            out.extend_from_slice(&bytes[start..i]);
            push_escape(out, b);
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
