//! Transports: the byte streams the host serves on, and the framing codec
//! (`openwork_proto::transport`, re-exported here) they all go through.
//!
//! Every transport yields a `FrameReader` and a `FrameWriter`; the session
//! layer above knows nothing about which one it is talking over.
//! The HTTP and WebSocket fronts start sessions through `session::run`, with
//! the host as a `session::Serving`: transport never names the host.

pub(crate) mod assets;
pub(crate) mod http;
pub mod stdio;
pub mod tls;
pub mod unix;
pub mod websocket;

pub use openwork_proto::transport::{
    Activity, DEFAULT_MAX_FRAME, FrameError, FrameReader, FrameWriter, Framing, FramingMode,
    FramingSlot, ReadEvent, Tracked, activity, codec, framed,
};

/// An in-memory connection pair for tests: (client side, host side).
pub fn in_memory_pair() -> (tokio::io::DuplexStream, tokio::io::DuplexStream) {
    tokio::io::duplex(256 * 1024)
}
