//! openwork-client: a client of openwork-host, built on `openwork-proto`
//! alone, so that a client (the CLI, a future wasm build, a mobile app
//! through UniFFI) links no SQLite and no server code.
//!
//! It owns:
//! - [`Connection`]: a JSON-RPC connection over any framed byte stream, calls
//!   with typed or raw params, and the notifications that arrive in between,
//!   kept in order; [`connect_unix`] for the host's local socket;
//! - [`tls`]: connecting over TLS with the host's certificate pinned;
//! - [`pair`]: pairing a device with a code (SPAKE2 bound to the TLS session);
//! - [`hosts`]: the paired hosts a device remembers (`hosts.toml`);
//! - [`reconnect`]: a session with a paired host that reconnects on its own
//!   and resumes what it followed;
//! - [`log_frames`]: reading `log.chunk` notifications without a JSON tree.
//!
//! Used by the host's CLI, its conformance runner, the benchmarks and the
//! tests (as `openwork_host::client`).

use std::collections::VecDeque;
use std::io;

// openwork-proto's modules at this crate's root, so that the client names
// them as it did when it was a module of the host (`crate::protocol::…`).
use openwork_proto::{discovery, pairing, protocol, rpc, transport};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::rpc::RpcError;
use crate::transport::{FrameReader, FrameWriter, ReadEvent};

/// A client-side failure.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the host answered with an error: {0}")]
    Rpc(RpcError),
    #[error("the connection closed")]
    Closed,
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    #[error("framing error: {0}")]
    Frame(#[from] crate::transport::FrameError),
    #[error("the host sent something that is not valid JSON-RPC: {0}")]
    Protocol(String),
}

/// A message read while waiting for the reply to call `id`.
pub(crate) enum Incoming {
    /// A notification, to keep for later.
    Notification(Value),
    /// The reply to another call (one given up on earlier), to pass over.
    OtherReply,
    /// This call's result or error.
    Reply(Result<Value, ClientError>),
}

impl Incoming {
    pub(crate) fn of(message: Value, id: u64) -> Incoming {
        if message.get("method").is_some() {
            return Incoming::Notification(message);
        }
        if message.get("id").and_then(Value::as_u64) != Some(id) {
            return Incoming::OtherReply;
        }
        if let Some(error) = message.get("error") {
            return Incoming::Reply(
                serde_json::from_value::<RpcError>(error.clone())
                    .map_err(|e| ClientError::Protocol(e.to_string()))
                    .and_then(|error| Err(ClientError::Rpc(error))),
            );
        }
        Incoming::Reply(Ok(message.get("result").cloned().unwrap_or(Value::Null)))
    }
}

/// One connection to a host.
pub struct Connection<R, W> {
    reader: FrameReader<R>,
    writer: FrameWriter<W>,
    next_id: u64,
    pending: VecDeque<Value>,
}

impl<R, W> std::fmt::Debug for Connection<R, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("next_id", &self.next_id)
            .field("queued_notifications", &self.pending.len())
            .finish()
    }
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Connection<R, W> {
    pub fn new(reader: FrameReader<R>, writer: FrameWriter<W>) -> Self {
        Self {
            reader,
            writer,
            next_id: 0,
            pending: VecDeque::new(),
        }
    }

    /// The framed halves, for a caller that reads on a task of its own
    /// (nothing may have been read yet: queued notifications are not returned).
    pub fn into_parts(self) -> (FrameReader<R>, FrameWriter<W>) {
        (self.reader, self.writer)
    }

    /// Sends a request and waits for its result, keeping notifications that arrive meanwhile.
    pub async fn call<P: Serialize, T: DeserializeOwned>(
        &mut self,
        method: &str,
        params: P,
    ) -> Result<T, ClientError> {
        self.next_id += 1;
        let id = self.next_id;
        let message =
            serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send(&message).await?;
        loop {
            let message = self.read_message().await?;
            match Incoming::of(message, id) {
                Incoming::Notification(message) => self.pending.push_back(message),
                Incoming::OtherReply => {}
                Incoming::Reply(result) => {
                    return serde_json::from_value(result?)
                        .map_err(|e| ClientError::Protocol(e.to_string()));
                }
            }
        }
    }

    /// Sends a notification.
    pub async fn notify<P: Serialize>(
        &mut self,
        method: &str,
        params: P,
    ) -> Result<(), ClientError> {
        let message = serde_json::json!({"jsonrpc": "2.0", "method": method, "params": params});
        self.send(&message).await
    }

    /// Sends any JSON value as one frame.
    pub async fn send(&mut self, message: &Value) -> Result<(), ClientError> {
        let body = serde_json::to_vec(message).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.send_frame(&body).await
    }

    /// Sends raw bytes as one frame.
    pub async fn send_frame(&mut self, body: &[u8]) -> Result<(), ClientError> {
        self.writer.write_frame(body).await?;
        self.writer.flush().await?;
        Ok(())
    }

    /// Writes bytes with no framing at all.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.writer.write_raw(bytes).await?;
        self.writer.flush().await?;
        Ok(())
    }

    /// Half-closes the connection: the host sees end of input.
    pub async fn close_write(&mut self) -> Result<(), ClientError> {
        self.writer.shutdown().await?;
        Ok(())
    }

    /// The next message of any kind, queued notifications first.
    pub async fn next_message(&mut self) -> Result<Value, ClientError> {
        match self.pending.pop_front() {
            Some(message) => Ok(message),
            None => self.read_message().await,
        }
    }

    /// The next notification, skipping nothing (responses to unknown ids are dropped).
    pub async fn next_notification(&mut self) -> Result<Value, ClientError> {
        loop {
            let message = self.next_message().await?;
            if message.get("method").is_some() {
                return Ok(message);
            }
        }
    }

    /// The next frame's raw body.
    pub async fn read_frame(&mut self) -> Result<Vec<u8>, ClientError> {
        match self.reader.next().await? {
            ReadEvent::Frame(body) => Ok(body),
            ReadEvent::Eof => Err(ClientError::Closed),
            ReadEvent::TooLarge { .. } => Err(ClientError::Protocol(
                "a frame from the host was too large".into(),
            )),
        }
    }

    async fn read_message(&mut self) -> Result<Value, ClientError> {
        let body = self.read_frame().await?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Protocol(e.to_string()))
    }
}

/// Connects to a host's local socket with LSP framing.
pub async fn connect_unix(
    path: &std::path::Path,
) -> io::Result<
    Connection<
        tokio::io::ReadHalf<tokio::net::UnixStream>,
        tokio::io::WriteHalf<tokio::net::UnixStream>,
    >,
> {
    let stream = tokio::net::UnixStream::connect(path).await?;
    let (reader, writer) = crate::transport::framed(
        stream,
        crate::transport::FramingMode::Fixed(crate::transport::Framing::Lsp),
        1 << 30,
    );
    Ok(Connection::new(reader, writer))
}

pub mod hosts;
pub mod log_frames;
pub mod pair;
pub mod reconnect;
pub mod tls;

pub use hosts::{KnownHost, KnownHosts};
pub use log_frames::decode_log_chunk;
pub use reconnect::{
    HostSession, LinkEvent, LinkObserver, NETWORK_CHANGE_PROBE, NetworkChanges, Notice,
    ReconnectPolicy,
};
pub use tls::{ConnectError, TlsConnection, connect_tls};

/// Why a session with a paired host could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("the host refused this device: {0}")]
    Refused(RpcError),
    #[error("{0}")]
    Connection(String),
    /// A call's error, from the host.
    #[error("{0}")]
    Rpc(RpcError),
    /// The connection dropped while a call that is not safe to repeat was in flight.
    #[error(
        "the connection to the host dropped before it answered `{method}`; it may or may not have been done, so it was not sent again"
    )]
    Interrupted { method: String },
    /// Nothing answered at the host's address on the first try: it is down,
    /// or not reachable from here. (Reconnecting with patience is for a
    /// connection that worked once.)
    #[error("cannot reach {host} at {address}: {cause}; is `openwork-host serve` running there?")]
    Unreachable {
        host: String,
        address: String,
        cause: String,
    },
    /// The host stayed unreachable for the whole reconnect time.
    #[error(
        "lost the connection to {host} ({address}) and could not reconnect within {waited} (last error: {last_error}). \
         Check that the host is running (`openwork-host status` on it), that this device can reach {address} \
         (network, VPN, firewall), and that the host still listens there; allow more time with --reconnect-timeout"
    )]
    GaveUp {
        host: String,
        address: String,
        waited: String,
        last_error: String,
    },
}

/// Connects to a paired host (certificate pinned) and authenticates.
pub async fn open_session(
    host: &KnownHost,
    client_name: &str,
) -> Result<TlsConnection, SessionError> {
    let connected = connect_tls(
        &host.address,
        Some(&host.fingerprint),
        std::time::Duration::from_secs(15),
    )
    .await?;
    authenticate(connected.connection, host, client_name).await
}

async fn authenticate(
    mut conn: TlsConnection,
    host: &KnownHost,
    client_name: &str,
) -> Result<TlsConnection, SessionError> {
    let params = serde_json::json!({
        "clientInfo": {"name": client_name, "version": env!("CARGO_PKG_VERSION")},
        "protocolVersion": crate::protocol::PROTOCOL_VERSION,
        "auth": {"deviceId": host.device_id, "token": host.token},
    });
    match conn.call::<_, Value>("initialize", params).await {
        Ok(_) => Ok(conn),
        Err(ClientError::Rpc(e)) => Err(SessionError::Refused(e)),
        Err(e) => Err(SessionError::Connection(e.to_string())),
    }
}
