//! Framing: the codec every transport's byte stream goes through, and the
//! activity a connection's reads and writes leave behind.

pub mod activity;
pub mod codec;

pub use activity::{Activity, Tracked};
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
    let mut writer = FrameWriter::new(write, reader.framing());
    writer.set_activity(reader.activity());
    (reader, writer)
}
