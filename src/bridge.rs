//! `openwork-host stdio` when a daemon is running: relays frames between
//! stdin/stdout (LSP or newline-delimited JSON) and the daemon's socket (LSP),
//! so that scripts see the same tasks as every other client.
//!
//! The bridge moves frames, not meaning: it answers on its own only for what
//! never reaches the daemon (an oversized or malformed frame on stdin), with
//! the errors the daemon gives (the same constructors), and it notes the
//! `shutdown` / `exit` lifecycle as it passes, so that the process exits the
//! way an in-process host would.

use parking_lot::Mutex;
use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::rpc::message::{Incoming, Message, answered, encode_error, parse_frame};
use crate::rpc::{Id, RpcError};
use crate::transport::{
    FrameError, FrameReader, FrameWriter, Framing, FramingMode, FramingSlot, ReadEvent,
};

/// Frames from the daemon may be as large as it likes to send.
const FROM_DAEMON_LIMIT: usize = 1 << 30;

/// How a bridged session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeEnd {
    /// The client sent `exit`; `after_shutdown` when a `shutdown` had
    /// succeeded before it (LSP: exit code 0, else 1).
    Exit { after_shutdown: bool },
    /// The client's input ended (or could not be read further), and the host
    /// then finished and closed the connection.
    InputEnded,
    /// The host closed the connection while the client was still talking.
    HostClosed,
}

/// The lifecycle calls seen passing by.
#[derive(Default)]
struct Lifecycle {
    /// `shutdown` requests not answered yet.
    shutdowns: HashSet<Id>,
    shutdown_done: bool,
    exit_sent: bool,
    input_ended: bool,
}

/// Notes the `shutdown` and `exit` calls in a frame from the client.
fn note_calls(lifecycle: &Mutex<Lifecycle>, body: &[u8]) {
    // Cheap before a full parse: most frames are neither.
    if !contains(body, b"shutdown") && !contains(body, b"exit") {
        return;
    }
    let messages = match parse_frame(body) {
        Incoming::Single(message) => vec![message],
        Incoming::Batch(messages) => messages,
        Incoming::ParseError(_) => return,
    };
    let mut lifecycle = lifecycle.lock();
    for message in messages {
        match message {
            Message::Request(r) if r.method == "shutdown" => {
                lifecycle.shutdowns.insert(r.id);
            }
            Message::Request(r) if r.method == "exit" => lifecycle.exit_sent = true,
            Message::Notification(n) if n.method == "exit" => lifecycle.exit_sent = true,
            _ => {}
        }
    }
}

/// Notes the answers to `shutdown` in a frame from the daemon.
fn note_answers(lifecycle: &Mutex<Lifecycle>, body: &[u8]) {
    let mut lifecycle = lifecycle.lock();
    if lifecycle.shutdowns.is_empty() {
        return;
    }
    for (id, ok) in answered(body) {
        if lifecycle.shutdowns.remove(&id) && ok {
            lifecycle.shutdown_done = true;
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

/// Relays until the daemon closes the connection; says how the session ended.
pub async fn run<I, O>(input: I, output: O, socket: UnixStream, limit: usize) -> BridgeEnd
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
    let lifecycle = Arc::new(Mutex::new(Lifecycle::default()));

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
    let upstream_lifecycle = Arc::clone(&lifecycle);
    let upstream = tokio::spawn(async move {
        loop {
            match from_client.next().await {
                Ok(ReadEvent::Frame(body)) => {
                    note_calls(&upstream_lifecycle, &body);
                    if to_daemon.write_frame(&body).await.is_err()
                        || to_daemon.flush().await.is_err()
                    {
                        return;
                    }
                }
                Ok(ReadEvent::TooLarge { size, limit }) => {
                    let error = RpcError::frame_too_large(size, limit);
                    let _ = upstream_out.send(encode_error(None, &error)).await;
                }
                Ok(ReadEvent::Eof) => break,
                Err(FrameError::MalformedHeader(detail)) => {
                    let error = RpcError::malformed_header(&detail);
                    let _ = upstream_out.send(encode_error(None, &error)).await;
                    break;
                }
                Err(_) => break,
            }
        }
        upstream_lifecycle.lock().input_ended = true;
        // Half-close: the daemon finishes what this client follows, then closes.
        let _ = to_daemon.shutdown().await;
    });

    while let Ok(ReadEvent::Frame(body)) = from_daemon.next().await {
        note_answers(&lifecycle, &body);
        if out_tx.send(Bytes::from(body)).await.is_err() {
            break;
        }
    }
    upstream.abort();
    drop(out_tx);
    let _ = writer.await;
    let lifecycle = lifecycle.lock();
    if lifecycle.exit_sent {
        BridgeEnd::Exit {
            after_shutdown: lifecycle.shutdown_done,
        }
    } else if lifecycle.input_ended {
        BridgeEnd::InputEnded
    } else {
        BridgeEnd::HostClosed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_counts_as_after_shutdown_only_once_shutdown_succeeded() {
        let lifecycle = Mutex::new(Lifecycle::default());
        note_calls(
            &lifecycle,
            br#"{"jsonrpc":"2.0","id":"s","method":"shutdown","params":{"x":1}}"#,
        );
        note_answers(
            &lifecycle,
            br#"{"jsonrpc":"2.0","id":"s","error":{"code":-32602,"message":"no"}}"#,
        );
        assert!(!lifecycle.lock().shutdown_done, "a refused shutdown");
        note_calls(
            &lifecycle,
            br#"[{"jsonrpc":"2.0","id":7,"method":"shutdown"},{"jsonrpc":"2.0","method":"exit"}]"#,
        );
        assert!(lifecycle.lock().exit_sent);
        note_answers(&lifecycle, br#"[{"jsonrpc":"2.0","id":7,"result":null}]"#);
        assert!(lifecycle.lock().shutdown_done);
    }
}
