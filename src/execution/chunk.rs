//! Log chunks: cutting output at UTF-8 boundaries and encoding `log.chunk`.

use base64::Engine;
use bytes::Bytes;

use crate::clock;
use crate::protocol::{LogChunk, LogStream};
use crate::rpc::json;

/// The largest chunk, in bytes.
pub const MAX_CHUNK: usize = 64 * 1024;

/// How many leading bytes of `data` can be sent now without cutting a UTF-8
/// sequence: everything but an incomplete sequence at the very end.
pub fn complete_prefix_len(data: &[u8]) -> usize {
    let len = data.len();
    for back in 1..=len.min(3) {
        let byte = data[len - back];
        if byte & 0xC0 == 0x80 {
            continue; // a continuation byte: the lead is further back
        }
        let needed = match byte {
            0x00..=0x7F => 1,
            b if b & 0xE0 == 0xC0 => 2,
            b if b & 0xF0 == 0xE0 => 3,
            b if b & 0xF8 == 0xF0 => 4,
            _ => 1, // not a valid lead byte: nothing to wait for
        };
        return if needed > back { len - back } else { len };
    }
    len
}

/// Cuts output read at once into chunks of at most `MAX_CHUNK` bytes, never
/// inside a UTF-8 sequence (without copying: the pieces share `data`).
pub fn split_chunks(mut data: Bytes) -> impl Iterator<Item = Bytes> {
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        let cut = match data.len() <= MAX_CHUNK {
            true => data.len(),
            // Holds back at most three bytes, so every piece has some.
            false => complete_prefix_len(&data[..MAX_CHUNK]),
        };
        Some(data.split_to(cut))
    })
}

/// Builds the wire form of a chunk.
pub fn log_chunk(task_id: &str, seq: u64, stream: LogStream, data: &[u8], ts_ms: i64) -> LogChunk {
    let (data, data_base64) = match std::str::from_utf8(data) {
        Ok(text) => (text.to_owned(), None),
        Err(_) => (
            String::from_utf8_lossy(data).into_owned(),
            Some(base64::engine::general_purpose::STANDARD.encode(data)),
        ),
    };
    LogChunk {
        task_id: task_id.to_owned(),
        seq,
        stream,
        data,
        data_base64,
        ts: clock::rfc3339(ts_ms),
    }
}

/// Encodes a chunk as a complete `log.chunk` notification.
///
/// This is the hot path of streaming, so it writes the JSON by hand; a test
/// checks that the bytes are exactly serde's encoding of `LogChunk`.
pub fn encode_log_chunk(
    task_id: &str,
    seq: u64,
    stream: LogStream,
    data: &[u8],
    ts_ms: i64,
) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + data.len() / 8 + 192);
    out.extend_from_slice(br#"{"jsonrpc":"2.0","method":"log.chunk","params":{"taskId":"#);
    json::write_str(&mut out, task_id);
    out.extend_from_slice(br#","seq":"#);
    out.extend_from_slice(seq.to_string().as_bytes());
    out.extend_from_slice(match stream {
        LogStream::Stdout => br#","stream":"stdout","data":"#.as_slice(),
        LogStream::Stderr => br#","stream":"stderr","data":"#.as_slice(),
        LogStream::Event => br#","stream":"event","data":"#.as_slice(),
    });
    // Not UTF-8: a readable approximation, and the exact bytes in base64.
    if !json::write_utf8(&mut out, data) {
        json::write_str(&mut out, &String::from_utf8_lossy(data));
        out.extend_from_slice(br#","dataBase64":""#);
        out.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(data)
                .as_bytes(),
        );
        out.push(b'"');
    }
    out.extend_from_slice(br#","ts":""#);
    out.extend_from_slice(clock::rfc3339(ts_ms).as_bytes());
    out.extend_from_slice(b"\"}}");
    Bytes::from(out)
}

/// The exact bytes a chunk carries.
pub fn chunk_bytes(chunk: &LogChunk) -> Vec<u8> {
    match &chunk.data_base64 {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap_or_else(|_| chunk.data.as_bytes().to_vec()),
        None => chunk.data.as_bytes().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_sequences_at_the_end_are_held_back() {
        let euro = "€".as_bytes(); // 3 bytes
        let emoji = "😀".as_bytes(); // 4 bytes
        assert_eq!(complete_prefix_len(b"abc"), 3);
        assert_eq!(complete_prefix_len(&[b'a', euro[0]]), 1);
        assert_eq!(complete_prefix_len(&[b'a', euro[0], euro[1]]), 1);
        assert_eq!(complete_prefix_len(&[b'a', euro[0], euro[1], euro[2]]), 4);
        assert_eq!(
            complete_prefix_len(&[b'a', emoji[0], emoji[1], emoji[2]]),
            1
        );
        assert_eq!(complete_prefix_len(emoji), 4);
        assert_eq!(complete_prefix_len(&[b'a', 0xFF]), 2);
        assert_eq!(complete_prefix_len(&[0x80, 0x80, 0x80]), 3);
        assert_eq!(complete_prefix_len(b""), 0);
    }

    #[test]
    fn every_cut_of_a_text_reassembles_into_valid_chunks() {
        let text = "héllo wörld € 😀 done".as_bytes();
        for cut in 0..=text.len() {
            let k = complete_prefix_len(&text[..cut]);
            assert!(std::str::from_utf8(&text[..k]).is_ok(), "cut {cut}");
            assert!(cut - k <= 3);
        }
    }

    #[test]
    fn output_read_at_once_is_cut_into_chunks_between_characters() {
        let text = "ascii line\n€uro 😀 é\n".repeat(20_000);
        for len in [
            0,
            1,
            MAX_CHUNK - 1,
            MAX_CHUNK,
            MAX_CHUNK + 1,
            3 * MAX_CHUNK + 7,
            text.len(),
        ] {
            let mut bytes = text.as_bytes()[..len].to_vec();
            let pieces: Vec<Bytes> = split_chunks(Bytes::from(bytes.clone())).collect();
            assert!(pieces.iter().all(|p| !p.is_empty() && p.len() <= MAX_CHUNK));
            assert_eq!(pieces.concat(), bytes, "{len} bytes");
            assert_eq!(
                pieces.len(),
                len.div_ceil(MAX_CHUNK).max(usize::from(len > 0)),
                "{len}"
            );
            // Whole characters in every piece but where the input itself cuts one.
            let complete = complete_prefix_len(&bytes);
            let mut at = 0;
            for piece in &pieces {
                at += piece.len();
                if at <= complete {
                    assert!(
                        std::str::from_utf8(piece).is_ok(),
                        "{len} bytes, piece ending at {at}"
                    );
                }
            }
            // Bytes that are not UTF-8 at all are cut at the limit.
            bytes.fill(0xFF);
            let pieces: Vec<Bytes> = split_chunks(Bytes::from(bytes.clone())).collect();
            assert!(pieces.iter().all(|p| p.len() <= MAX_CHUNK));
            assert_eq!(pieces.concat(), bytes);
        }
    }

    #[test]
    fn invalid_utf8_is_carried_exactly_in_base64() {
        let raw = [b'o', b'k', 0xFF, 0xFE, b'!'];
        let chunk = log_chunk("t", 1, LogStream::Stdout, &raw, 0);
        assert_eq!(chunk.data, "ok\u{FFFD}\u{FFFD}!");
        assert_eq!(chunk_bytes(&chunk), raw);
        let text = log_chunk("t", 2, LogStream::Stderr, "é".as_bytes(), 0);
        assert_eq!(text.data_base64, None);
        let encoded = encode_log_chunk("t", 2, LogStream::Stderr, b"a\nb", 0);
        for (data, stream) in [
            (&b"plain"[..], LogStream::Stdout),
            (b"a\"\\\n\x01", LogStream::Event),
            (&raw[..], LogStream::Stderr),
        ] {
            let by_hand = encode_log_chunk("t_x", 42, stream, data, 1_700_000_000_123);
            let by_serde = crate::rpc::notifications::LOG_CHUNK.encode(&log_chunk(
                "t_x",
                42,
                stream,
                data,
                1_700_000_000_123,
            ));
            assert_eq!(by_hand, by_serde);
        }
        let v: serde_json::Value = serde_json::from_slice(&encoded).unwrap();
        assert_eq!(v["method"], "log.chunk");
        assert_eq!(v["params"]["data"], "a\nb");
        assert_eq!(v["params"]["stream"], "stderr");
    }

    /// The client's fast reader (`openwork_client::log_frames`) against the
    /// frames this module writes.
    mod read_by_the_client {
        use super::*;
        use crate::client::decode_log_chunk;

        #[test]
        fn host_frames_decode_as_serde_decodes_them() {
            let texts: [&[u8]; 7] = [
                b"",
                b"plain line\n",
                b"quote \" backslash \\ slash / tab \t cr \r bell \x07 nul \x00 del \x7f",
                "naïve € 😀 text spread over more than sixteen bytes".as_bytes(),
                &[b'o', b'k', 0xFF, 0xFE, b'!'],
                b"0123456789abcdef\n0123456789abcdef\"",
                &[b'x'; 70_000],
            ];
            for (i, text) in texts.iter().enumerate() {
                for stream in [LogStream::Stdout, LogStream::Stderr, LogStream::Event] {
                    let frame =
                        encode_log_chunk("t_abc", i as u64 + 1, stream, text, 1_700_000_000_123);
                    let fast = decode_log_chunk(&frame);
                    assert!(fast.is_some(), "{}", String::from_utf8_lossy(&frame));
                    let parsed: serde_json::Value = serde_json::from_slice(&frame).unwrap();
                    assert_eq!(parsed["jsonrpc"], "2.0");
                    assert_eq!(parsed["method"], "log.chunk");
                    let by_serde: LogChunk =
                        serde_json::from_value(parsed["params"].clone()).unwrap();
                    assert_eq!(fast, Some(by_serde));
                }
            }
        }

        #[test]
        fn every_cut_of_a_frame_is_refused_not_misread() {
            let frame = encode_log_chunk("t_1", 9, LogStream::Stdout, "é\"\n€".as_bytes(), 0);
            for cut in 0..frame.len() {
                assert_eq!(decode_log_chunk(&frame[..cut]), None, "cut at {cut}");
            }
            assert!(decode_log_chunk(&frame).is_some());
        }
    }
}
