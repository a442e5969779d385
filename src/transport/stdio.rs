//! The stdio transport: frames on stdin/stdout, framing detected from the first byte.
//!
//! Nothing but protocol frames may reach stdout; logs go to stderr.

use tokio::io::{Stdin, Stdout};

use super::codec::{FrameReader, FrameWriter, FramingMode};

/// Frames stdin and stdout, accepting LSP or newline-delimited JSON.
pub fn framed(limit: usize) -> (FrameReader<Stdin>, FrameWriter<Stdout>) {
    let reader = FrameReader::new(tokio::io::stdin(), FramingMode::Detect, limit);
    let writer = FrameWriter::new(tokio::io::stdout(), reader.framing());
    (reader, writer)
}
