//! `openwork-host stdio` when a daemon is running: relays frames between
//! stdin/stdout (LSP or newline-delimited JSON) and the daemon's socket (LSP),
//! so that scripts see the same tasks as every other client.
//!
//! The bridge moves frames, not meaning: it answers on its own only for what
//! never reaches the daemon (an oversized or malformed frame on stdin), with
//! the same errors the daemon would give.

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::rpc::message::encode_error;
use crate::rpc::{ErrorCode, RpcError};
use crate::transport::{
    FrameError, FrameReader, FrameWriter, Framing, FramingMode, FramingSlot, ReadEvent,
};

/// Frames from the daemon may be as large as it likes to send.
const FROM_DAEMON_LIMIT: usize = 1 << 30;

/// Relays until the daemon closes the connection. Returns the process exit code.
pub async fn run<I, O>(input: I, output: O, socket: UnixStream, limit: usize) -> i32
where
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin + Send + 'static,
{
    let mut from_client = FrameReader::new(input, FramingMode::Detect, limit);
    let mut to_client = FrameWriter::new(output, from_client.framing());
    let (socket_read, socket_write) = socket.into_split();
    let mut from_daemon = FrameReader::new(
        socket_read,
        FramingMode::Fixed(Framing::Lsp),
        FROM_DAEMON_LIMIT,
    );
    let mut to_daemon = FrameWriter::new(socket_write, FramingSlot::fixed(Framing::Lsp));

    // Both directions write to stdout: the daemon's frames and our own errors.
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(64);
    let writer = tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            if to_client.write_frame(&frame).await.is_err() {
                return;
            }
            while let Ok(frame) = out_rx.try_recv() {
                if to_client.write_frame(&frame).await.is_err() {
                    return;
                }
            }
            if to_client.flush().await.is_err() {
                return;
            }
        }
        let _ = to_client.shutdown().await;
    });

    let upstream_out = out_tx.clone();
    let upstream = tokio::spawn(async move {
        loop {
            match from_client.next().await {
                Ok(ReadEvent::Frame(body)) => {
                    if to_daemon.write_frame(&body).await.is_err()
                        || to_daemon.flush().await.is_err()
                    {
                        return;
                    }
                }
                Ok(ReadEvent::TooLarge { size, limit }) => {
                    let shown =
                        size.map_or_else(|| "more than".to_owned(), |s| format!("{s} bytes,"));
                    let error = RpcError::invalid_request(format_args!(
                        "the message is {shown} over the host's limit of {limit} bytes"
                    ))
                    .with_data("limit", limit.into());
                    let _ = upstream_out.send(encode_error(None, &error)).await;
                }
                Ok(ReadEvent::Eof) => break,
                Err(FrameError::MalformedHeader(detail)) => {
                    let error = RpcError::new(
                        ErrorCode::PARSE_ERROR,
                        format!("Parse error: malformed frame header: {detail}"),
                    );
                    let _ = upstream_out.send(encode_error(None, &error)).await;
                    break;
                }
                Err(_) => break,
            }
        }
        // Half-close: the daemon finishes what this client follows, then closes.
        let _ = to_daemon.shutdown().await;
    });

    while let Ok(ReadEvent::Frame(body)) = from_daemon.next().await {
        if out_tx.send(Bytes::from(body)).await.is_err() {
            break;
        }
    }
    upstream.abort();
    drop(out_tx);
    let _ = writer.await;
    0
}
