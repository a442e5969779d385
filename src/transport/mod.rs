//! Transports: framing codecs and the byte streams they run on.
//!
//! Every transport yields a `FrameReader` and a `FrameWriter`; the session
//! layer above knows nothing about which one it is talking over.

pub mod assets;
pub mod codec;
pub mod http;
pub mod stdio;
pub mod tls;
pub mod unix;
pub mod websocket;

pub use codec::{
    DEFAULT_MAX_FRAME, FrameError, FrameReader, FrameWriter, Framing, FramingMode, FramingSlot,
    ReadEvent,
};

/// Splits any duplex byte stream into a framed reader and writer.
pub fn framed<S>(
    stream: S,
    mode: FramingMode,
    limit: usize,
) -> (
    FrameReader<tokio::io::ReadHalf<S>>,
    FrameWriter<tokio::io::WriteHalf<S>>,
)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    let (read, write) = tokio::io::split(stream);
    let reader = FrameReader::new(read, mode, limit);
    let writer = FrameWriter::new(write, reader.framing());
    (reader, writer)
}

/// An in-memory connection pair for tests: (client side, host side).
pub fn in_memory_pair() -> (tokio::io::DuplexStream, tokio::io::DuplexStream) {
    tokio::io::duplex(256 * 1024)
}
