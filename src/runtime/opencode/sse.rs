//! Server-sent events: a bounded parser of the `text/event-stream` format
//! (the WHATWG HTML standard, "Server-sent events", parsing an event stream).
//!
//! Lines end with CRLF, LF or a bare CR (also when a CRLF is split between
//! two reads); one byte order mark at the start of the stream is skipped;
//! lines starting with `:` are comments; `data` lines are joined with LF;
//! `event`, `id` and `retry` are kept as the standard says, and other fields
//! are ignored. A line or an event's data longer than the parser's limits is
//! an error (the caller drops the stream) rather than memory without bound.

use std::time::Duration;

/// The longest line accepted by default (OpenCode sends each event's JSON on one line).
pub(super) const MAX_LINE: usize = 16 * 1024 * 1024;
/// The most data one event may carry by default (each `data` line counting
/// with the LF that joins it).
pub(super) const MAX_EVENT: usize = 16 * 1024 * 1024;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Event {
    /// The `event` field, or `message` when there was none.
    pub kind: String,
    /// The `data` lines, joined with LF.
    pub data: String,
    /// The last event id seen on the stream (it carries over between events).
    pub id: String,
}

/// Why a stream cannot be parsed further.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum SseError {
    #[error("a line of the event stream is longer than {limit} bytes")]
    LineTooLong { limit: usize },
    #[error("an event of the event stream carries more than {limit} bytes of data")]
    EventTooLarge { limit: usize },
}

/// Accumulates bytes and yields each complete event.
pub(super) struct Parser {
    max_line: usize,
    max_event: usize,
    /// The line read so far (without its ending).
    line: Vec<u8>,
    /// The stream's first line is still being read (a BOM may start it).
    at_start: bool,
    /// The last byte read was a CR: an LF right after it ends no new line.
    after_cr: bool,
    /// The data buffer: each `data` value followed by LF.
    data: String,
    kind: String,
    last_id: String,
    retry: Option<Duration>,
    /// Set once the parser has failed; it then yields nothing more.
    failed: Option<SseError>,
}

impl Default for Parser {
    fn default() -> Parser {
        Parser::with_limits(MAX_LINE, MAX_EVENT)
    }
}

impl Parser {
    /// A parser that fails on a line longer than `max_line` bytes or an
    /// event with more than `max_event` bytes of data.
    pub(super) fn with_limits(max_line: usize, max_event: usize) -> Parser {
        Parser {
            max_line,
            max_event,
            line: Vec::new(),
            at_start: true,
            after_cr: false,
            data: String::new(),
            kind: String::new(),
            last_id: String::new(),
            retry: None,
            failed: None,
        }
    }

    /// The reconnection time the stream asked for (`retry`), if any.
    pub(super) fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Feeds bytes; returns every event they complete, or why the stream
    /// cannot be read further (then every later call fails the same way).
    pub(super) fn feed(&mut self, mut bytes: &[u8]) -> Result<Vec<Event>, SseError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut events = Vec::new();
        while !bytes.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if bytes[0] == b'\n' {
                    bytes = &bytes[1..];
                    continue;
                }
            }
            let (content, rest) = match memchr::memchr2(b'\r', b'\n', bytes) {
                Some(end) => (&bytes[..end], Some(end)),
                None => (bytes, None),
            };
            if self.line.len() + content.len() > self.max_line {
                return Err(self.fail(SseError::LineTooLong {
                    limit: self.max_line,
                }));
            }
            self.line.extend_from_slice(content);
            let Some(end) = rest else { break };
            self.after_cr = bytes[end] == b'\r';
            bytes = &bytes[end + 1..];
            let line = std::mem::take(&mut self.line);
            let result = self.line_ended(&line, &mut events);
            // The buffer is kept for the next line (its capacity, not its bytes).
            self.line = line;
            self.line.clear();
            result?;
        }
        Ok(events)
    }

    fn fail(&mut self, error: SseError) -> SseError {
        self.line = Vec::new();
        self.data = String::new();
        self.failed = Some(error.clone());
        error
    }

    /// Interprets one complete line.
    fn line_ended(&mut self, mut line: &[u8], events: &mut Vec<Event>) -> Result<(), SseError> {
        if std::mem::take(&mut self.at_start) {
            line = line.strip_prefix(BOM).unwrap_or(line);
        }
        if line.is_empty() {
            self.dispatch(events);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                let value = String::from_utf8_lossy(value);
                if self.data.len() + value.len() + 1 > self.max_event {
                    return Err(self.fail(SseError::EventTooLarge {
                        limit: self.max_event,
                    }));
                }
                self.data.push_str(&value);
                self.data.push('\n');
            }
            b"event" => self.kind = String::from_utf8_lossy(value).into_owned(),
            b"id" if !value.contains(&0) => {
                self.last_id = String::from_utf8_lossy(value).into_owned();
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                // Digits only, so it parses unless it overflows (then it is ignored).
                if let Some(ms) = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    self.retry = Some(Duration::from_millis(ms));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A blank line: the event so far is complete (one without data is not sent).
    fn dispatch(&mut self, events: &mut Vec<Event>) {
        let kind = std::mem::take(&mut self.kind);
        if self.data.is_empty() {
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        data.pop();
        events.push(Event {
            kind: if kind.is_empty() {
                "message".to_owned()
            } else {
                kind
            },
            data,
            id: self.last_id.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(events: Vec<Event>) -> Vec<String> {
        events.into_iter().map(|e| e.data).collect()
    }

    /// Every event of `stream` fed in one read, then fed byte by byte: the same.
    fn parse(stream: &[u8]) -> Vec<Event> {
        let whole = Parser::default().feed(stream).unwrap();
        let mut p = Parser::default();
        let mut bytewise = Vec::new();
        for b in stream {
            bytewise.extend(p.feed(std::slice::from_ref(b)).unwrap());
        }
        assert_eq!(whole, bytewise, "split reads change nothing");
        whole
    }

    #[test]
    fn events_split_across_reads_and_multi_line_data_are_joined() {
        let mut p = Parser::default();
        assert!(p.feed(b"data: {\"a\"").unwrap().is_empty());
        assert_eq!(
            data(
                p.feed(b":1}\n\ndata: x\ndata: y\r\n\r\n: comment\n\n")
                    .unwrap()
            ),
            ["{\"a\":1}", "x\ny"]
        );
    }

    #[test]
    fn lf_crlf_and_bare_cr_all_end_lines() {
        let events = parse(b"data: lf\n\ndata: crlf\r\n\r\ndata: cr\r\rdata: a\rdata: b\r\n\n");
        assert_eq!(data(events), ["lf", "crlf", "cr", "a\nb"]);
    }

    #[test]
    fn a_crlf_split_between_reads_is_one_line_ending() {
        let mut p = Parser::default();
        assert!(p.feed(b"data: x\r").unwrap().is_empty());
        // The LF completes the CR: no blank line, so no event yet.
        assert!(p.feed(b"\n").unwrap().is_empty());
        assert_eq!(data(p.feed(b"\r\n").unwrap()), ["x"]);
    }

    #[test]
    fn a_bom_at_the_start_is_skipped_and_only_there() {
        assert_eq!(data(parse(b"\xEF\xBB\xBFdata: first\n\n")), ["first"]);
        let mut p = Parser::default();
        assert!(p.feed(b"\xEF\xBB").unwrap().is_empty());
        assert_eq!(data(p.feed(b"\xBFdata: split\n\n").unwrap()), ["split"]);
        // Later, the same bytes are part of a field name: not `data`, ignored.
        let events = parse(b"data: one\n\n\xEF\xBB\xBFdata: two\n\n");
        assert_eq!(data(events), ["one"]);
    }

    #[test]
    fn comments_unknown_fields_and_dataless_events_send_nothing() {
        let events = parse(b": keep-alive\n\nfoo: bar\n\nevent: ping\n\nid: 7\n\n");
        assert!(events.is_empty(), "{events:?}");
    }

    #[test]
    fn field_values_lose_one_leading_space_and_a_line_without_colon_is_a_field() {
        let events = parse(b"data:no-space\ndata:  two-spaces\ndata\ndata: \n\n");
        assert_eq!(data(events), ["no-space\n two-spaces\n\n"]);
    }

    #[test]
    fn event_id_and_retry_follow_the_standard() {
        let mut p = Parser::default();
        let events = p
            .feed(
                b"event: update\nid: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\nid: x\0y\ndata: d\n\n",
            )
            .unwrap();
        let seen: Vec<(&str, &str, &str)> = events
            .iter()
            .map(|e| (e.kind.as_str(), e.data.as_str(), e.id.as_str()))
            .collect();
        // The type lasts one event; the id carries over; an id with NUL is ignored.
        assert_eq!(
            seen,
            [
                ("update", "a", "1"),
                ("message", "b", "1"),
                ("message", "c", ""),
                ("message", "d", "")
            ]
        );
        assert_eq!(p.retry(), None);
        p.feed(b"retry: 2500\n").unwrap();
        assert_eq!(p.retry(), Some(Duration::from_millis(2500)));
        p.feed(b"retry: 1s\nretry: -1\nretry:\n").unwrap();
        assert_eq!(
            p.retry(),
            Some(Duration::from_millis(2500)),
            "not digits: ignored"
        );
    }

    #[test]
    fn an_unfinished_event_at_the_end_is_not_sent() {
        assert!(parse(b"data: never ended\n").is_empty());
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        assert_eq!(data(parse(b"data: a\xFFb\n\n")), ["a\u{FFFD}b"]);
    }

    #[test]
    fn a_line_over_the_limit_is_a_clear_error_also_across_reads() {
        let mut p = Parser::with_limits(16, 1024);
        assert_eq!(
            data(p.feed(b"data: 0123456789\n\n").unwrap()),
            ["0123456789"]
        );
        assert!(p.feed(b"data: 01234").unwrap().is_empty());
        let err = p.feed(b"56789ab").unwrap_err();
        assert_eq!(err, SseError::LineTooLong { limit: 16 });
        assert_eq!(
            err.to_string(),
            "a line of the event stream is longer than 16 bytes"
        );
        // Failed for good: the caller drops the stream.
        assert_eq!(p.feed(b"\n\n").unwrap_err(), err);
    }

    #[test]
    fn an_event_over_the_limit_is_a_clear_error() {
        let mut p = Parser::with_limits(64, 9);
        // Each line is short, but together they are too much for one event.
        let err = p.feed(b"data: 1234\ndata: 5678\n").unwrap_err();
        assert_eq!(err, SseError::EventTooLarge { limit: 9 });
        assert!(err.to_string().contains("more than 9 bytes"), "{err}");
        // Exactly at the limit is fine (each data line counts with its LF).
        let mut p = Parser::with_limits(64, 9);
        assert_eq!(
            data(p.feed(b"data: 1234\ndata: 567\n\n").unwrap()),
            ["1234\n567"]
        );
    }
}
