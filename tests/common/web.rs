//! The browser's side of the host's TLS port, for tests: a TLS 1.3
//! connection offering the ALPN ids a test chooses, and `/rpc` opened as a
//! WebSocket with the `Host` and `Origin` it chooses. Every wait is bounded.

use std::sync::Arc;

use openwork_host::transport::tls::PinnedCert;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::within;

pub type Ws = WebSocketStream<TlsStream<TcpStream>>;

/// A TLS connection to the host's port offering `alpn` (nothing when empty).
pub async fn tls(address: &str, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    tls_with(address, alpn, PinnedCert::new(None)).await
}

/// A TLS 1.3 connection offering `alpn`, checking the host's certificate with `verifier`.
pub async fn tls_with(
    address: &str,
    alpn: &[&[u8]],
    verifier: Arc<PinnedCert>,
) -> TlsStream<TcpStream> {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(verifier)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    let tcp = TcpStream::connect(address).await.unwrap();
    within(
        10,
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(openwork_host::transport::tls::server_name(), tcp),
    )
    .await
    .expect("TLS handshake")
}

/// Opens `/rpc` as a WebSocket at `address`, saying it is for `host` (the
/// `Host` header) and sending `origin` when given; the HTTP status when refused.
pub async fn websocket_as(address: &str, host: &str, origin: Option<&str>) -> Result<Ws, u16> {
    let stream = tls(address, &[b"http/1.1"]).await;
    let mut request = format!("wss://{host}/rpc").into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    match within(10, tokio_tungstenite::client_async(request, stream)).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("WebSocket handshake: {e}"),
    }
}
