//! Framing on a byte stream: LSP `Content-Length` frames and newline-delimited JSON.
//!
//! The reader bounds everything it reads before allocating: a header section
//! is at most 8 KiB, a frame at most the configured limit. A frame over the
//! limit is skipped in small pieces and reported, so that the connection can
//! answer with an error and carry on. A body's memory is taken as its bytes
//! arrive, never up front, so a frame that stops arriving holds only what was
//! sent; the reader records its progress (`Activity`) for the deadlines that
//! drop such a frame.

use std::io::{self, IoSlice};
use std::sync::{Arc, OnceLock};

use bytes::BufMut;

use super::activity::{Activity, Tracked};
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
    BufWriter,
};

/// The default largest frame: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;
/// The largest LSP header section we read.
const MAX_HEADER_SECTION: usize = 8 * 1024;
/// Read buffer size; also the piece size when skipping an oversized frame.
const READ_BUFFER: usize = 64 * 1024;
/// The rest of a frame body at least this large is read straight into the body.
const DIRECT_READ: usize = 16 * 1024;
/// The write buffer. A frame at least this large goes to the stream in one
/// vectored write of header and body (after what is buffered), so a log
/// chunk's bytes are not copied on the way; smaller frames are gathered.
const WRITE_BUFFER: usize = 32 * 1024;

/// How messages are delimited on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length: N\r\n\r\n` then N bytes.
    Lsp,
    /// One JSON text per line.
    Ndjson,
}

/// What the reader accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingMode {
    /// Only this framing.
    Fixed(Framing),
    /// Detect from the first byte: `{` or `[` means NDJSON, anything else LSP (stdio).
    Detect,
}

/// One event from the reader.
#[derive(Debug)]
pub enum ReadEvent {
    /// A whole frame's body.
    Frame(Vec<u8>),
    /// A frame over the limit was skipped; `size` is its declared size when known.
    TooLarge { size: Option<u64>, limit: usize },
    /// The peer closed the stream between frames.
    Eof,
}

/// A framing fault after which the stream cannot be resynchronised.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("malformed frame header: {0}")]
    MalformedHeader(String),
    #[error("the connection closed in the middle of a frame")]
    Truncated,
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
}

/// The framing a connection settled on, shared by its reader and writer.
#[derive(Debug, Clone, Default)]
pub struct FramingSlot(Arc<OnceLock<Framing>>);

impl FramingSlot {
    pub fn fixed(framing: Framing) -> Self {
        let slot = Self::default();
        let _ = slot.0.set(framing);
        slot
    }

    /// The framing in use; LSP until detection has happened.
    pub fn get(&self) -> Framing {
        self.0.get().copied().unwrap_or(Framing::Lsp)
    }

    fn set(&self, framing: Framing) {
        let _ = self.0.set(framing);
    }
}

/// Reads frames from a byte stream.
pub struct FrameReader<R> {
    inner: BufReader<Tracked<R>>,
    activity: Arc<Activity>,
    mode: FramingMode,
    slot: FramingSlot,
    limit: usize,
    line: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, mode: FramingMode, limit: usize) -> Self {
        let slot = match mode {
            FramingMode::Fixed(framing) => FramingSlot::fixed(framing),
            FramingMode::Detect => FramingSlot::default(),
        };
        let activity = Activity::new();
        Self {
            inner: BufReader::with_capacity(
                READ_BUFFER,
                Tracked::new(inner, Arc::clone(&activity)),
            ),
            activity,
            mode,
            slot,
            limit,
            line: Vec::new(),
        }
    }

    /// Changes the largest frame accepted from now on.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// Where the reader records its progress (hand it to the writer too).
    pub fn activity(&self) -> Arc<Activity> {
        Arc::clone(&self.activity)
    }

    /// The framing slot, to hand to the writer so that replies use the same framing.
    pub fn framing(&self) -> FramingSlot {
        self.slot.clone()
    }

    /// Reads the next frame.
    ///
    /// Cancel-safe only between frames: dropping the future mid-frame loses sync,
    /// so callers run it to completion (the connection loop does).
    pub async fn next(&mut self) -> Result<ReadEvent, FrameError> {
        // Between frames until a byte arrives; from then on the frame is begun.
        if self.inner.fill_buf().await?.is_empty() {
            return Ok(ReadEvent::Eof);
        }
        self.activity.begin_frame();
        let event = self.next_begun().await;
        self.activity.end_frame();
        event
    }

    async fn next_begun(&mut self) -> Result<ReadEvent, FrameError> {
        let framing = match (self.mode, self.slot.0.get()) {
            (FramingMode::Fixed(f), _) => f,
            (FramingMode::Detect, Some(f)) => *f,
            (FramingMode::Detect, None) => match self.detect().await? {
                Some(f) => f,
                None => return Ok(ReadEvent::Eof),
            },
        };
        match framing {
            Framing::Lsp => self.next_lsp().await,
            Framing::Ndjson => self.next_ndjson().await,
        }
    }

    async fn detect(&mut self) -> Result<Option<Framing>, FrameError> {
        loop {
            let buf = self.inner.fill_buf().await?;
            let Some(&first) = buf.first() else {
                return Ok(None);
            };
            let skip = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
            if skip > 0 {
                self.inner.consume(skip);
                continue;
            }
            let framing = if first == b'{' || first == b'[' {
                Framing::Ndjson
            } else {
                Framing::Lsp
            };
            self.slot.set(framing);
            return Ok(Some(framing));
        }
    }

    async fn next_lsp(&mut self) -> Result<ReadEvent, FrameError> {
        let mut content_length: Option<u64> = None;
        let mut header_bytes = 0usize;
        loop {
            self.line.clear();
            let remaining = MAX_HEADER_SECTION.saturating_sub(header_bytes);
            let line = read_line(&mut self.inner, &mut self.line, remaining).await?;
            match line {
                Line::Eof if header_bytes == 0 => return Ok(ReadEvent::Eof),
                Line::Eof | Line::Partial => return Err(FrameError::Truncated),
                Line::TooLong => {
                    return Err(FrameError::MalformedHeader(format!(
                        "the header section is longer than {MAX_HEADER_SECTION} bytes"
                    )));
                }
                Line::Complete(n) => header_bytes += n,
            }
            let Some(text) = self.line.strip_suffix(b"\r\n") else {
                return Err(FrameError::MalformedHeader(
                    "header lines must end with \\r\\n".to_owned(),
                ));
            };
            if text.is_empty() {
                break;
            }
            let text = std::str::from_utf8(text).map_err(|_| {
                FrameError::MalformedHeader("a header line is not ASCII".to_owned())
            })?;
            let Some((name, value)) = text.split_once(':') else {
                return Err(FrameError::MalformedHeader(format!(
                    "expected `Name: value`, got {:?}",
                    truncate(text, 60)
                )));
            };
            if name.trim().eq_ignore_ascii_case("content-length") {
                if content_length.is_some() {
                    return Err(FrameError::MalformedHeader(
                        "Content-Length appears twice".to_owned(),
                    ));
                }
                let value = value.trim();
                let parsed = value
                    .parse::<u64>()
                    .ok()
                    .filter(|_| value.bytes().all(|b| b.is_ascii_digit()));
                match parsed {
                    Some(n) => content_length = Some(n),
                    None => {
                        return Err(FrameError::MalformedHeader(format!(
                            "Content-Length must be a decimal byte count, got {:?}",
                            truncate(value, 40)
                        )));
                    }
                }
            }
            // Content-Type and any other header are accepted and ignored:
            // the body is always UTF-8 JSON.
        }
        let Some(length) = content_length else {
            return Err(FrameError::MalformedHeader(
                "the Content-Length header is missing".to_owned(),
            ));
        };
        if length > self.limit as u64 {
            self.skip(length).await?;
            return Ok(ReadEvent::TooLarge {
                size: Some(length),
                limit: self.limit,
            });
        }
        Ok(ReadEvent::Frame(self.read_body(length as usize).await?))
    }

    /// Reads exactly `length` bytes: what is buffered, then the rest straight
    /// into the body when it is large (one copy, no zeroing), through the
    /// buffer when it is small (so that small frames share a read).
    ///
    /// The body grows with what has arrived (at most doubling), so that a
    /// declared length costs nothing until its bytes come.
    async fn read_body(&mut self, length: usize) -> Result<Vec<u8>, FrameError> {
        let mut body = Vec::with_capacity(length.min(READ_BUFFER));
        let buffered = self.inner.buffer();
        let take = buffered.len().min(length);
        body.extend_from_slice(&buffered[..take]);
        self.inner.consume(take);
        while body.len() < length {
            let missing = length - body.len();
            let n = if missing >= DIRECT_READ && self.inner.buffer().is_empty() {
                if body.capacity() == body.len() {
                    body.reserve(missing.min(body.len().max(READ_BUFFER)));
                }
                // Limited to the missing bytes: never a byte of the next frame.
                let mut rest = (&mut body).limit(missing);
                self.inner.get_mut().read_buf(&mut rest).await?
            } else {
                let buf = self.inner.fill_buf().await?;
                let n = buf.len().min(missing);
                body.extend_from_slice(&buf[..n]);
                self.inner.consume(n);
                n
            };
            if n == 0 {
                return Err(FrameError::Truncated);
            }
        }
        Ok(body)
    }

    async fn next_ndjson(&mut self) -> Result<ReadEvent, FrameError> {
        loop {
            self.line.clear();
            // The limit is on the JSON text; allow for the line ending.
            match read_line(
                &mut self.inner,
                &mut self.line,
                self.limit.saturating_add(2),
            )
            .await?
            {
                Line::Eof => return Ok(ReadEvent::Eof),
                Line::TooLong => {
                    self.line = Vec::new();
                    self.skip_line().await?;
                    return Ok(ReadEvent::TooLarge {
                        size: None,
                        limit: self.limit,
                    });
                }
                Line::Complete(_) | Line::Partial => {}
            }
            let mut text = &self.line[..];
            while let Some((last, rest)) = text.split_last() {
                if *last == b'\n' || *last == b'\r' {
                    text = rest;
                } else {
                    break;
                }
            }
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if text.len() > self.limit {
                return Ok(ReadEvent::TooLarge {
                    size: Some(text.len() as u64),
                    limit: self.limit,
                });
            }
            return Ok(ReadEvent::Frame(text.to_vec()));
        }
    }

    /// Discards `length` bytes without buffering them.
    async fn skip(&mut self, mut length: u64) -> Result<(), FrameError> {
        while length > 0 {
            let buf = self.inner.fill_buf().await?;
            if buf.is_empty() {
                return Err(FrameError::Truncated);
            }
            let n = buf.len().min(usize::try_from(length).unwrap_or(usize::MAX));
            self.inner.consume(n);
            length -= n as u64;
        }
        Ok(())
    }

    /// Discards the rest of a line (up to and including `\n`), or to EOF.
    async fn skip_line(&mut self) -> Result<(), FrameError> {
        loop {
            let buf = self.inner.fill_buf().await?;
            if buf.is_empty() {
                return Ok(());
            }
            match memchr::memchr(b'\n', buf) {
                Some(i) => {
                    self.inner.consume(i + 1);
                    return Ok(());
                }
                None => {
                    let n = buf.len();
                    self.inner.consume(n);
                }
            }
        }
    }
}

enum Line {
    /// A line ending in `\n`, of this many bytes.
    Complete(usize),
    /// Bytes and then EOF without `\n`.
    Partial,
    /// EOF before any byte.
    Eof,
    /// More than the allowed bytes before `\n`; what was read is kept, the rest not.
    TooLong,
}

/// Reads up to and including `\n`, at most `max` bytes into `out`.
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    out: &mut Vec<u8>,
    max: usize,
) -> io::Result<Line> {
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(if out.is_empty() {
                Line::Eof
            } else {
                Line::Partial
            });
        }
        let (take, done) = match memchr::memchr(b'\n', buf) {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if out.len() + take > max {
            return Ok(Line::TooLong);
        }
        out.extend_from_slice(&buf[..take]);
        reader.consume(take);
        if done {
            return Ok(Line::Complete(out.len()));
        }
    }
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// Writes frames to a byte stream in the connection's framing.
pub struct FrameWriter<W> {
    inner: BufWriter<Tracked<W>>,
    framing: FramingSlot,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub fn new(inner: W, framing: FramingSlot) -> Self {
        Self {
            inner: BufWriter::with_capacity(WRITE_BUFFER, Tracked::new(inner, Activity::new())),
            framing,
        }
    }

    /// Records what is written in `activity` (the reader's, for one connection).
    pub fn set_activity(&mut self, activity: Arc<Activity>) {
        self.inner.get_mut().set_activity(activity);
    }

    /// Buffers one frame (or writes it, when large); call `flush` to send.
    pub async fn write_frame(&mut self, body: &[u8]) -> io::Result<()> {
        match self.framing.get() {
            Framing::Lsp => {
                let header = format!("Content-Length: {}\r\n\r\n", body.len());
                self.write_all_vectored(&mut [IoSlice::new(header.as_bytes()), IoSlice::new(body)])
                    .await
            }
            Framing::Ndjson => {
                // Compact JSON never holds a raw newline, so a line is a frame.
                self.write_all_vectored(&mut [IoSlice::new(body), IoSlice::new(b"\n")])
                    .await
            }
        }
    }

    /// Writes every slice, in order: through the buffer when they fit in it,
    /// straight to the stream when they do not (`BufWriter` decides).
    async fn write_all_vectored(&mut self, mut parts: &mut [IoSlice<'_>]) -> io::Result<()> {
        IoSlice::advance_slices(&mut parts, 0);
        while !parts.is_empty() {
            let n = self.inner.write_vectored(parts).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut parts, n);
        }
        Ok(())
    }

    /// Writes raw bytes, bypassing framing (conformance tests of bad input).
    pub async fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes).await
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().await
    }

    /// Flushes and shuts the write side down.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.inner.flush().await?;
        self.inner.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn events(
        input: &[u8],
        mode: FramingMode,
        limit: usize,
    ) -> (Vec<String>, Option<String>) {
        let mut reader = FrameReader::new(input, mode, limit);
        let mut out = Vec::new();
        loop {
            match reader.next().await {
                Ok(ReadEvent::Frame(body)) => out.push(String::from_utf8_lossy(&body).into_owned()),
                Ok(ReadEvent::TooLarge { size, .. }) => out.push(format!("too large {size:?}")),
                Ok(ReadEvent::Eof) => return (out, None),
                Err(e) => return (out, Some(e.to_string())),
            }
        }
    }

    #[tokio::test]
    async fn lsp_frames_with_content_type_and_any_header_case() {
        let input = b"Content-Length: 2\r\n\r\n{}content-length:3\r\nContent-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n[1]";
        let (frames, err) = events(input, FramingMode::Fixed(Framing::Lsp), 100).await;
        assert_eq!(frames, ["{}", "[1]"]);
        assert_eq!(err, None);
    }

    #[tokio::test]
    async fn oversized_lsp_frame_is_skipped_and_the_stream_continues() {
        let mut input = b"Content-Length: 50\r\n\r\n".to_vec();
        input.extend_from_slice(&[b'x'; 50]);
        input.extend_from_slice(b"Content-Length: 2\r\n\r\n{}");
        let (frames, err) = events(&input, FramingMode::Fixed(Framing::Lsp), 10).await;
        assert_eq!(frames, ["too large Some(50)", "{}"]);
        assert_eq!(err, None);
    }

    #[tokio::test]
    async fn huge_declared_length_is_not_allocated() {
        // 2^60 bytes declared: the reader must fail on EOF while skipping, not allocate.
        let input = b"Content-Length: 1152921504606846976\r\n\r\n{}";
        let (frames, err) = events(input, FramingMode::Fixed(Framing::Lsp), 1024).await;
        assert!(frames.is_empty());
        assert_eq!(
            err.as_deref(),
            Some("the connection closed in the middle of a frame")
        );
    }

    #[tokio::test]
    async fn malformed_headers_are_errors() {
        for input in [
            &b"Content-Length: abc\r\n\r\n{}"[..],
            b"Content-Length: -1\r\n\r\n",
            b"Content-Length: 2\n\n{}",
            b"\r\n{}",
            b"Content-Type: x\r\n\r\n{}",
            b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
            b"garbage without colon\r\n\r\n",
        ] {
            let (_, err) = events(input, FramingMode::Fixed(Framing::Lsp), 100).await;
            assert!(
                err.as_deref().is_some_and(|e| e.starts_with("malformed")),
                "{input:?} gave {err:?}"
            );
        }
        let mut long = b"X-Pad: ".to_vec();
        long.extend_from_slice(&[b'a'; 9000]);
        let (_, err) = events(&long, FramingMode::Fixed(Framing::Lsp), 100).await;
        assert!(err.unwrap().contains("longer than"));
    }

    #[tokio::test]
    async fn large_and_small_frames_arriving_in_uneven_pieces_stay_exact() {
        // Bodies larger than the read buffer (read straight into the body),
        // around the direct-read size, and tiny, back to back.
        let bodies: Vec<Vec<u8>> = [200_000usize, 2, DIRECT_READ, DIRECT_READ - 1, 70_000, 1]
            .iter()
            .enumerate()
            .map(|(i, &len)| (0..len).map(|j| b'a' + ((i * 7 + j) % 26) as u8).collect())
            .collect();
        let mut input = Vec::new();
        for body in &bodies {
            input.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            input.extend_from_slice(body);
        }
        let (client, server) = tokio::io::duplex(8 * 1024);
        let writer = tokio::spawn(async move {
            let mut client = client;
            let pieces = [1usize, 13, 70_001, 4096, 65_536, 3, 100_000];
            let (mut at, mut k) = (0, 0);
            while at < input.len() {
                let end = (at + pieces[k % pieces.len()]).min(input.len());
                client.write_all(&input[at..end]).await.unwrap();
                (at, k) = (end, k + 1);
            }
            // Then a frame cut short, then end of stream.
            client
                .write_all(b"Content-Length: 50000\r\n\r\nabc")
                .await
                .unwrap();
        });
        let mut reader = FrameReader::new(server, FramingMode::Fixed(Framing::Lsp), 1 << 20);
        for body in &bodies {
            match reader.next().await {
                Ok(ReadEvent::Frame(got)) => {
                    assert!(got == *body, "a {} byte body changed", body.len())
                }
                other => panic!("expected a frame, got {other:?}"),
            }
        }
        writer.await.unwrap();
        assert!(matches!(reader.next().await, Err(FrameError::Truncated)));
    }

    #[tokio::test]
    async fn truncated_frame_then_eof() {
        let (_, err) = events(
            b"Content-Length: 10\r\n\r\n{}",
            FramingMode::Fixed(Framing::Lsp),
            100,
        )
        .await;
        assert_eq!(
            err.as_deref(),
            Some("the connection closed in the middle of a frame")
        );
        let (_, err) = events(
            b"Content-Length: 10\r\n",
            FramingMode::Fixed(Framing::Lsp),
            100,
        )
        .await;
        assert_eq!(
            err.as_deref(),
            Some("the connection closed in the middle of a frame")
        );
    }

    #[tokio::test]
    async fn detection_picks_ndjson_for_json_and_lsp_otherwise() {
        let mut reader = FrameReader::new(
            &b"  \n{\"a\":1}\r\n\n[2]\n{\"b\":3}"[..],
            FramingMode::Detect,
            100,
        );
        let mut frames = Vec::new();
        while let ReadEvent::Frame(f) = reader.next().await.unwrap() {
            frames.push(String::from_utf8(f).unwrap());
        }
        assert_eq!(frames, ["{\"a\":1}", "[2]", "{\"b\":3}"]);
        assert_eq!(reader.framing().get(), Framing::Ndjson);

        let reader = {
            let mut r = FrameReader::new(
                &b"Content-Length: 2\r\n\r\n{}"[..],
                FramingMode::Detect,
                100,
            );
            assert!(matches!(r.next().await.unwrap(), ReadEvent::Frame(_)));
            r
        };
        assert_eq!(reader.framing().get(), Framing::Lsp);
    }

    #[tokio::test]
    async fn oversized_ndjson_line_is_skipped() {
        let mut input = vec![b'{'; 300];
        input.extend_from_slice(b"\n{}\n");
        let (frames, err) = events(&input, FramingMode::Fixed(Framing::Ndjson), 100).await;
        assert_eq!(frames, ["too large None", "{}"]);
        assert_eq!(err, None);
    }

    /// A stream that takes at most a few bytes per write, vectored or not.
    struct Trickle {
        out: Vec<u8>,
        step: usize,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> std::task::Poll<io::Result<usize>> {
            // Varies the amount taken so that writes end mid-header and mid-body.
            self.calls += 1;
            let mut left = self.step + self.calls % 7 * 1000;
            let mut n = 0;
            for buf in bufs {
                let take = buf.len().min(left);
                self.out.extend_from_slice(&buf[..take]);
                (n, left) = (n + take, left - take);
            }
            std::task::Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn written_frames_large_and_small_arrive_in_order_through_partial_writes() {
        // Around the write buffer's size (large ones skip it), and tiny ones between.
        let sizes = [
            2usize,
            WRITE_BUFFER + 5,
            1,
            WRITE_BUFFER,
            WRITE_BUFFER - 1,
            300_000,
            7,
            3,
        ];
        let bodies: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| (0..len).map(|j| b'a' + ((i * 5 + j) % 26) as u8).collect())
            .collect();
        for framing in [Framing::Lsp, Framing::Ndjson] {
            for step in [1usize, 100, 5000] {
                let mut sink = Trickle {
                    out: Vec::new(),
                    step,
                    calls: 0,
                };
                {
                    let mut w = FrameWriter::new(&mut sink, FramingSlot::fixed(framing));
                    for body in &bodies {
                        w.write_frame(body).await.unwrap();
                    }
                    w.flush().await.unwrap();
                }
                let mut reader =
                    FrameReader::new(&sink.out[..], FramingMode::Fixed(framing), 1 << 20);
                for body in &bodies {
                    match reader.next().await {
                        Ok(ReadEvent::Frame(got)) => assert!(
                            got == *body,
                            "{framing:?}, {step}-byte writes: a {} byte body changed",
                            body.len()
                        ),
                        other => panic!("expected a frame, got {other:?}"),
                    }
                }
                assert!(matches!(reader.next().await, Ok(ReadEvent::Eof)));
            }
        }
    }

    #[tokio::test]
    async fn writer_frames_in_the_detected_framing() {
        let mut out = Vec::new();
        {
            let mut w = FrameWriter::new(&mut out, FramingSlot::fixed(Framing::Lsp));
            w.write_frame(b"{}").await.unwrap();
            w.flush().await.unwrap();
        }
        assert_eq!(out, b"Content-Length: 2\r\n\r\n{}");
        let mut out = Vec::new();
        {
            let mut w = FrameWriter::new(&mut out, FramingSlot::fixed(Framing::Ndjson));
            w.write_frame(b"{}").await.unwrap();
            w.flush().await.unwrap();
        }
        assert_eq!(out, b"{}\n");
    }
}
