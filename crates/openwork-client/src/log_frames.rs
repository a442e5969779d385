//! Reading `log.chunk` notifications straight from their bytes, without a
//! JSON tree or serde's string scratch: the client's hot path while a task
//! streams.
//!
//! It reads the shape a host sends (any key order, any whitespace, every
//! string escape) and gives up on anything else, so that the caller parses
//! that frame in full; what it returns is what serde_json would decode. A
//! test holds the two side by side.

use crate::protocol::{LogChunk, LogStream};
use crate::rpc::json::{clean_run_len, copy_clean_run};

/// The `log.chunk` notification in `body`, or `None` when the frame is
/// something else (or a shape this reader leaves to the full parser).
pub fn decode_log_chunk(body: &[u8]) -> Option<LogChunk> {
    let mut p = Parser { bytes: body, at: 0 };
    let mut seen = Seen::default();
    let mut chunk = None;
    p.object(|p, key| match key {
        b"jsonrpc" if !seen.jsonrpc => {
            seen.jsonrpc = true;
            (p.string()? == "2.0").then_some(())
        }
        b"method" if !seen.method => {
            seen.method = true;
            (p.string()? == "log.chunk").then_some(())
        }
        b"params" if chunk.is_none() => {
            chunk = Some(p.params()?);
            Some(())
        }
        _ => None,
    })?;
    p.skip_space();
    (p.at == body.len() && seen.jsonrpc && seen.method)
        .then_some(())
        .and(chunk)
}

/// Fills a member's slot; a member given twice (or unreadable) ends the fast path.
fn set_once<T>(slot: &mut Option<T>, value: Option<T>) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value?);
    Some(())
}

#[derive(Default)]
struct Seen {
    jsonrpc: bool,
    method: bool,
}

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        self.skip_space();
        (self.bytes.get(self.at) == Some(&byte)).then(|| self.at += 1)
    }

    /// An object, each member's value read by `member` (which sees the key's
    /// raw bytes; keys with escapes are left to the full parser).
    fn object(&mut self, mut member: impl FnMut(&mut Self, &[u8]) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            self.eat(b'"')?;
            let start = self.at;
            let len = clean_run_len(&self.bytes[start..]);
            self.at += len;
            self.eat_raw(b'"')?;
            let key = &self.bytes[start..start + len];
            self.eat(b':')?;
            self.skip_space();
            member(self, key)?;
            self.skip_space();
            match self.bytes.get(self.at)? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn eat_raw(&mut self, byte: u8) -> Option<()> {
        (self.bytes.get(self.at) == Some(&byte)).then(|| self.at += 1)
    }

    fn params(&mut self) -> Option<LogChunk> {
        let (mut task_id, mut seq, mut stream, mut data, mut data_base64, mut ts) =
            (None, None, None, None, None, None);
        self.object(|p, key| match key {
            b"taskId" => set_once(&mut task_id, p.string()),
            b"seq" => set_once(&mut seq, p.integer()),
            b"stream" => set_once(
                &mut stream,
                match p.string()?.as_str() {
                    "stdout" => Some(LogStream::Stdout),
                    "stderr" => Some(LogStream::Stderr),
                    "event" => Some(LogStream::Event),
                    _ => None,
                },
            ),
            b"data" => set_once(&mut data, p.string()),
            b"dataBase64" => set_once(&mut data_base64, p.null_or_string()),
            b"ts" => set_once(&mut ts, p.string()),
            _ => None,
        })?;
        Some(LogChunk {
            task_id: task_id?,
            seq: seq?,
            stream: stream?,
            data: data?,
            data_base64: data_base64.flatten(),
            ts: ts?,
        })
    }

    /// A non-negative integer as JSON writes it (no sign, fraction or exponent).
    fn integer(&mut self) -> Option<u64> {
        let digits = self.bytes[self.at..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let text = &self.bytes[self.at..self.at + digits];
        if digits == 0 || (digits > 1 && text[0] == b'0') {
            return None;
        }
        if let Some(b'.' | b'e' | b'E') = self.bytes.get(self.at + digits) {
            return None;
        }
        self.at += digits;
        std::str::from_utf8(text).ok()?.parse().ok()
    }

    fn null_or_string(&mut self) -> Option<Option<String>> {
        if self.bytes[self.at..].starts_with(b"null") {
            self.at += 4;
            return Some(None);
        }
        self.string().map(Some)
    }

    /// A string value, unescaped; the cursor is on its opening quote.
    fn string(&mut self) -> Option<String> {
        self.eat_raw(b'"')?;
        let run = clean_run_len(&self.bytes[self.at..]);
        if self.bytes.get(self.at + run) == Some(&b'"') {
            let text = &self.bytes[self.at..self.at + run];
            self.at += run + 1;
            return String::from_utf8(text.to_vec()).ok();
        }
        // Unescaping only shrinks: what is left of the frame bounds the
        // string (and a block copied past the end of a run).
        let mut out = Vec::with_capacity(self.bytes.len() - self.at + 16);
        loop {
            self.at += copy_clean_run(&mut out, &self.bytes[self.at..]);
            // The escape that ends most runs (lines) first.
            if self.bytes.get(self.at..self.at + 2) == Some(b"\\n") {
                out.push(b'\n');
                self.at += 2;
                continue;
            }
            match *self.bytes.get(self.at)? {
                b'"' => {
                    self.at += 1;
                    return String::from_utf8(out).ok();
                }
                b'\\' => {
                    let escape = *self.bytes.get(self.at + 1)?;
                    self.at += 2;
                    match escape {
                        b'n' => out.push(b'\n'),
                        b'"' => out.push(b'"'),
                        b'\\' => out.push(b'\\'),
                        b'/' => out.push(b'/'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'b' => out.push(0x08),
                        b'f' => out.push(0x0C),
                        b'u' => {
                            let c = self.unicode_escape()?;
                            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                        }
                        _ => return None,
                    }
                }
                // A raw control byte: not JSON; the full parser says so.
                _ => return None,
            }
        }
    }

    /// The character of a `\u` escape whose `\u` was just read, surrogate
    /// pairs joined; a lone surrogate is left to the full parser.
    fn unicode_escape(&mut self) -> Option<char> {
        let first = self.hex4()?;
        if !(0xD800..0xDC00).contains(&first) {
            return char::from_u32(first);
        }
        if self.bytes.get(self.at..self.at + 2)? != b"\\u" {
            return None;
        }
        self.at += 2;
        let second = self.hex4()?;
        if !(0xDC00..0xE000).contains(&second) {
            return None;
        }
        char::from_u32(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = std::str::from_utf8(self.bytes.get(self.at..self.at + 4)?).ok()?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.at += 4;
        u32::from_str_radix(digits, 16).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What serde_json makes of the same frame, when it is a log.chunk.
    fn by_serde(body: &[u8]) -> Option<LogChunk> {
        #[derive(serde::Deserialize)]
        struct Frame {
            jsonrpc: String,
            method: String,
            params: LogChunk,
        }
        serde_json::from_slice::<Frame>(body)
            .ok()
            .filter(|f| f.jsonrpc == "2.0" && f.method == "log.chunk")
            .map(|f| f.params)
    }

    #[test]
    fn other_spellings_of_a_chunk_decode_the_same() {
        for body in [
            r#" { "params" : { "ts" : "2026-01-01T00:00:00.000Z" , "data" : "a\u00e9\ud83d\ude00\/b" ,
                 "stream":"stderr", "seq": 18446744073709551615, "taskId":"t", "dataBase64": null },
                 "method":"log.chunk", "jsonrpc":"2.0" } "#,
            r#"{"jsonrpc":"2.0","method":"log.chunk","params":{"taskId":"t","seq":0,"stream":"event","data":"\u0041\u20ac","dataBase64":"AA==","ts":"x"}}"#,
        ] {
            let fast = decode_log_chunk(body.as_bytes());
            assert!(fast.is_some(), "{body}");
            assert_eq!(fast, by_serde(body.as_bytes()), "{body}");
        }
    }

    #[test]
    fn anything_else_is_left_to_the_full_parser() {
        let chunk = r#""params":{"taskId":"t","seq":1,"stream":"stdout","data":"x","ts":"y"}"#;
        let frames = [
            r#"{"jsonrpc":"2.0","method":"task.updated","params":{"taskId":"t","status":"running"}}"#.to_owned(),
            r#"{"jsonrpc":"2.0","id":1,"result":{}}"#.to_owned(),
            format!(r#"{{"jsonrpc":"2.0","method":"log.chunk",{chunk},"id":3}}"#),
            format!(r#"{{"jsonrpc":"2.0","method":"log.chunk",{chunk}}} trailing"#),
            format!(r#"{{"jsonrpc":"1.0","method":"log.chunk",{chunk}}}"#),
            format!(r#"{{"method":"log.chunk",{chunk}}}"#),
            format!(r#"{{"jsonrpc":"2.0","method":"log.chunk","method":"log.chunk",{chunk}}}"#),
            r#"{"jsonrpc":"2.0","method":"log.chunk","params":{"taskId":"t","seq":1,"seq":2,"stream":"stdout","data":"x","ts":"y"}}"#.to_owned(),
            r#"{"jsonrpc":"2.0","method":"log.chunk","params":{"taskId":"t","seq":-1,"stream":"stdout","data":"x","ts":"y"}}"#.to_owned(),
            r#"{"jsonrpc":"2.0","method":"log.chunk","params":{"taskId":"t","seq":1.5,"stream":"stdout","data":"x","ts":"y"}}"#.to_owned(),
            r#"{"jsonrpc":"2.0","method":"log.chunk","params":{"taskId":"t","seq":1,"stream":"video","data":"x","ts":"y"}}"#.to_owned(),
            r#"{"jsonrpc":"2.0","method":"log.chunk","params":{"taskId":"t","seq":1,"stream":"stdout","ts":"y"}}"#.to_owned(),
            r#"{"jsonrpc":"2.0","method":"log.chunk","params":{"taskId":"t","seq":1,"stream":"stdout","data":"a	b","ts":"y"}}"#.to_owned(),
            r#"{"jsonrpc":"2.0","method":"log.chunk","params":{"taskId":"t","seq":1,"stream":"stdout","data":"\ud800","ts":"y"}}"#.to_owned(),
            r#"{"jsonrpc":"2.0","method":"log.chunk","params":{"taskId":"t","seq":1,"stream":"stdout","data":"\q","ts":"y"}}"#.to_owned(),
            r#"{"jsonrpc":"2.0","method":"log.chunk","params":{"taskId":"t","seq":1,"stream":"stdout","data":"x","ts":"y","extra":1}}"#.to_owned(),
            r#"{"jsonrpc":"2.0","method":"log.chunk","params":{"taskId":"t","seq":1,"stream":"stdout","data":"unterminated"#.to_owned(),
            r#"[{"jsonrpc":"2.0","method":"log.chunk"}]"#.to_owned(),
            String::new(),
        ];
        for frame in frames {
            assert_eq!(decode_log_chunk(frame.as_bytes()), None, "{frame}");
        }
        let mut bad_utf8 = br#"{"jsonrpc":"2.0","method":"log.chunk","params":{"taskId":"t","seq":1,"stream":"stdout","data":""#.to_vec();
        bad_utf8.extend_from_slice(&[0xFF, b'"', b',']);
        bad_utf8.extend_from_slice(br#""ts":"y"}}"#);
        assert_eq!(decode_log_chunk(&bad_utf8), None);
    }
}
