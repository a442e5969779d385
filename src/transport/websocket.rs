//! A WebSocket (RFC 6455) as a session's transport: each text frame is one
//! JSON-RPC message or batch, each reply or notification one text frame.
//!
//! The socket is bridged to the session loop through an in-memory pipe in
//! the session's own framing, so that a browser's connection runs exactly
//! the loop, limits, scopes and revocation of every other transport. The
//! host pings every 25 s (a phone's radio wakes no more often) and closes a
//! connection that answered nothing since the previous ping.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::session::Serving;
use crate::session::admission::Admission;
use crate::session::deadline::Deadlines;
use crate::session::{self, SessionOptions};
use crate::transport::{self, Activity, FrameReader, Framing, FramingMode, ReadEvent};

/// How often the host pings an idle browser.
pub(crate) const PING_INTERVAL: Duration = Duration::from_secs(25);
/// The transport's name in logs and health.
pub(crate) const TRANSPORT: &str = "websocket";

/// What stands in for the TLS exporter when pairing over a WebSocket:
/// browsers cannot export keying material (see README, "Browsers").
pub fn web_channel_binding() -> [u8; 32] {
    Sha256::digest(b"openwork-pairing-web-v1").into()
}

/// Runs a session over an upgraded connection until either side ends it.
/// `origin` is the `Origin` the upgrade request carried (already checked);
/// `admission` is the TCP connection's place in the connection budget, and
/// the session keeps the deadlines of every network connection.
pub(crate) async fn run<S>(
    core: Arc<dyn Serving>,
    io: S,
    peer: String,
    origin: String,
    admission: Admission,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limit = core.config().limits.max_frame_bytes;
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(limit);
    config.max_frame_size = Some(limit);
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    let (host_side, bridge_side) = transport::in_memory_pair();
    let (reader, writer) = transport::framed(host_side, FramingMode::Fixed(Framing::Lsp), limit);
    let mut opts = SessionOptions::network(
        TRANSPORT,
        peer,
        Some(web_channel_binding()),
        admission,
        Deadlines::from_config(&core.config().network),
    );
    opts.origin = Some(origin);
    // Pongs never reach the session's pipe: the bridge reports them, so that
    // a browser answering pings is not taken for a silent connection.
    let activity = reader.activity();
    let session = session::run(core, reader, writer, opts);
    tokio::join!(session, bridge(ws, bridge_side, activity));
}

/// Why the bridge closes the socket.
fn close(code: CloseCode, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

/// Copies text frames into the session's pipe and the session's frames out
/// as text frames, pinging on the way, until either side ends.
async fn bridge<S>(ws: WebSocketStream<S>, pipe: tokio::io::DuplexStream, activity: Arc<Activity>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let (pipe_read, mut pipe_write) = tokio::io::split(pipe);
    // The session's frames, read whole by a task of their own (a frame read
    // cannot be interrupted halfway).
    let (frames_tx, mut frames) = mpsc::channel::<Bytes>(4);
    let mut outbound = FrameReader::new(pipe_read, FramingMode::Fixed(Framing::Lsp), usize::MAX);
    let reading = tokio::spawn(async move {
        while let Ok(ReadEvent::Frame(frame)) = outbound.next().await {
            if frames_tx.send(Bytes::from(frame)).await.is_err() {
                return;
            }
        }
    });
    let (control_tx, mut control) = mpsc::channel::<Message>(2);
    let heard = Arc::new(AtomicBool::new(true));
    let done = tokio_util::sync::CancellationToken::new();

    // Out: the session's frames and the control frames, to the socket.
    let writing = {
        let heard = Arc::clone(&heard);
        let ended = done.clone().drop_guard();
        async move {
            let _ended = ended;
            let mut ping = tokio::time::interval_at(
                tokio::time::Instant::now() + PING_INTERVAL,
                PING_INTERVAL,
            );
            ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let last = loop {
                let message = tokio::select! {
                    biased;
                    Some(message) = control.recv() => message,
                    frame = frames.recv() => match frame {
                        Some(frame) => match Utf8Bytes::try_from(frame) {
                            Ok(text) => Message::Text(text),
                            Err(_) => break close(CloseCode::Error, "the host produced a frame that is not UTF-8"),
                        },
                        None => break close(CloseCode::Normal, "the session ended"),
                    },
                    _ = ping.tick() => {
                        if !heard.swap(false, Ordering::Relaxed) {
                            break close(CloseCode::Away, "no answer to the keep-alive ping");
                        }
                        Message::Ping(Bytes::new())
                    }
                };
                let closing = matches!(message, Message::Close(_));
                if sink.send(message).await.is_err() || closing {
                    return;
                }
            };
            let _ = sink.send(last).await;
        }
    };

    // In: text frames to the session; anything else answered or refused.
    let reading_socket = async move {
        loop {
            let message = tokio::select! {
                _ = done.cancelled() => break,
                message = stream.next() => match message {
                    Some(message) => message,
                    None => break,
                },
            };
            heard.store(true, Ordering::Relaxed);
            activity.read();
            let text = match message {
                Ok(Message::Text(text)) => text,
                Ok(Message::Binary(_)) => {
                    let refuse = close(
                        CloseCode::Unsupported,
                        "binary frames are not accepted: send each JSON-RPC message as a text frame",
                    );
                    let _ = control_tx.send(refuse).await;
                    break;
                }
                // tungstenite answers pings itself; pongs only count as heard.
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
                Ok(Message::Close(_)) | Err(_) => break,
            };
            let header = format!("Content-Length: {}\r\n\r\n", text.len());
            if pipe_write.write_all(header.as_bytes()).await.is_err()
                || pipe_write.write_all(text.as_bytes()).await.is_err()
            {
                break;
            }
        }
        // The session sees the end of its input.
        let _ = pipe_write.shutdown().await;
        drop(pipe_write);
    };
    tokio::join!(writing, reading_socket);
    reading.abort();
}
