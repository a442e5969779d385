//! Connecting to a host over TLS, with its certificate pinned by fingerprint.

use std::time::Duration;

use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::Connection;
use crate::transport::{FramingMode, framed};
use openwork_proto::tls::{self, PinnedCert};

/// A JSON-RPC connection over TLS.
pub type TlsConnection =
    Connection<ReadHalf<TlsStream<TcpStream>>, WriteHalf<TlsStream<TcpStream>>>;

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot reach {address}: {source}")]
    Unreachable {
        address: String,
        source: std::io::Error,
    },
    #[error("timed out connecting to {0}")]
    Timeout(String),
    #[error(
        "the host at {address} presented certificate {got}, but {expected} is pinned: the host may be impersonated. \
         If the host was reinstalled or its identity reset, forget it (`openwork-host client forget`) and pair again"
    )]
    FingerprintMismatch {
        address: String,
        expected: String,
        got: String,
    },
    #[error("TLS with {address} failed: {message}")]
    Tls { address: String, message: String },
}

impl ConnectError {
    /// Why nothing answered, in a few words (`connection refused`), without
    /// the address: for a message that names the host itself.
    pub fn cause(&self) -> String {
        match self {
            Self::Unreachable { source, .. } => match source.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                std::io::ErrorKind::TimedOut => "timed out".to_owned(),
                std::io::ErrorKind::HostUnreachable => "no route to the host".to_owned(),
                std::io::ErrorKind::NetworkUnreachable => "the network is unreachable".to_owned(),
                _ => source.to_string(),
            },
            Self::Timeout(_) => "no answer (timed out)".to_owned(),
            other => other.to_string(),
        }
    }

    /// Nothing answered at the address: the host moved or is down (as
    /// opposed to a host that answered with the wrong certificate).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Timeout(_))
    }
}

/// A TLS connection and what the handshake showed.
pub struct Connected {
    pub connection: TlsConnection,
    /// The fingerprint of the certificate the host presented.
    pub fingerprint: String,
    /// Exported keying material, for pairing.
    pub exporter: [u8; 32],
}

/// Connects to `address` (`host:port`); with `pinned`, refuses any other certificate.
pub async fn connect_tls(
    address: &str,
    pinned: Option<&str>,
    timeout: Duration,
) -> Result<Connected, ConnectError> {
    let stream = connect_tls_stream(address, pinned, timeout).await?;
    let (reader, writer) = framed(
        stream.stream,
        FramingMode::Fixed(crate::transport::Framing::Lsp),
        1 << 30,
    );
    Ok(Connected {
        connection: Connection::new(reader, writer),
        fingerprint: stream.fingerprint,
        exporter: stream.exporter,
    })
}

/// A TLS stream and what the handshake showed, before any framing.
pub struct ConnectedStream {
    pub stream: TlsStream<TcpStream>,
    /// The fingerprint of the certificate the host presented.
    pub fingerprint: String,
    /// Exported keying material, for pairing.
    pub exporter: [u8; 32],
}

/// Like `connect_tls`, for a caller that frames the stream itself.
pub async fn connect_tls_stream(
    address: &str,
    pinned: Option<&str>,
    timeout: Duration,
) -> Result<ConnectedStream, ConnectError> {
    let verifier = PinnedCert::new(pinned);
    let config = tls::client_config(verifier.clone()).map_err(|e| ConnectError::Tls {
        address: address.to_owned(),
        message: e.to_string(),
    })?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let connect = async {
        let tcp =
            TcpStream::connect(address)
                .await
                .map_err(|source| ConnectError::Unreachable {
                    address: address.to_owned(),
                    source,
                })?;
        let _ = tcp.set_nodelay(true);
        connector
            .connect(tls::server_name(), tcp)
            .await
            .map_err(|e| match (pinned, verifier.seen()) {
                (Some(expected), Some(got)) if !got.eq_ignore_ascii_case(expected) => {
                    ConnectError::FingerprintMismatch {
                        address: address.to_owned(),
                        expected: expected.to_owned(),
                        got,
                    }
                }
                _ => ConnectError::Tls {
                    address: address.to_owned(),
                    message: e.to_string(),
                },
            })
    };
    let stream = tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| ConnectError::Timeout(address.to_owned()))??;
    let exporter = tls::exporter(stream.get_ref().1).ok_or_else(|| ConnectError::Tls {
        address: address.to_owned(),
        message: "no keying material could be exported".into(),
    })?;
    let fingerprint = verifier.seen().unwrap_or_default();
    Ok(ConnectedStream {
        stream,
        fingerprint,
        exporter,
    })
}
