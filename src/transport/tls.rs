//! TLS: the host's server configuration, a client verifier that pins the
//! host's certificate by fingerprint, and the exported keying material that
//! binds pairing to one TLS session.
//!
//! TLS 1.3 only, with our own ALPN id, no early data and no session tickets
//! (a resumed session would be a second session to reason about).

use parking_lot::Mutex;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::identity::{Identity, OwnerCertificate, hex};
use crate::pairing::crypto::EXPORTER_LABEL;

/// Our ALPN protocol id.
pub const ALPN: &[u8] = b"openwork/1";
/// What browsers offer: the port's HTTP side (see `transport::http`).
pub const ALPN_HTTP: &[u8] = b"http/1.1";
/// The default TLS port.
pub const DEFAULT_PORT: u16 = 4747;
/// The name clients present in SNI; the certificate is checked by fingerprint, not by name.
pub const SERVER_NAME: &str = "openwork-host";

/// A TLS configuration that cannot be built.
#[derive(Debug, thiserror::Error)]
#[error("TLS configuration: {0}")]
pub struct TlsError(String);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The host's TLS server configuration: ALPN `openwork/1` for the raw
/// protocol, `http/1.1` (or none) for browsers.
///
/// A client that offers `openwork/1` always gets the host's own identity
/// certificate, the one native clients pin; any other gets the owner's
/// certificate when one is configured (`owner`), so that browsers need not
/// warn, and renewing it never touches what native clients pinned.
pub fn server_config(
    identity: &Identity,
    owner: Option<Arc<OwnerCertificate>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key_der.clone()));
    let provider = provider();
    let own = CertifiedKey::from_der(
        vec![CertificateDer::from(identity.cert_der.clone())],
        key,
        &provider,
    )
    .map_err(|e| TlsError(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(HostCertificates {
            identity: Arc::new(own),
            owner,
        }));
    config.alpn_protocols = vec![ALPN.to_vec(), ALPN_HTTP.to_vec()];
    config.max_early_data_size = 0;
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// Picks the certificate by what the client offers in ALPN (see `server_config`).
#[derive(Debug)]
struct HostCertificates {
    identity: Arc<CertifiedKey>,
    owner: Option<Arc<OwnerCertificate>>,
}

impl ResolvesServerCert for HostCertificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let native = hello
            .alpn()
            .is_some_and(|mut offered| offered.any(|p| p == ALPN));
        match &self.owner {
            Some(owner) if !native => Some(owner.current()),
            _ => Some(Arc::clone(&self.identity)),
        }
    }
}

/// The SHA-256 fingerprint (hex) of a certificate.
pub fn fingerprint(cert: &[u8]) -> String {
    hex(&Sha256::digest(cert))
}

/// 32 bytes of exported keying material for pairing, or `None` before the handshake ends.
pub fn exporter<Data>(conn: &rustls::ConnectionCommon<Data>) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    conn.export_keying_material(&mut out, EXPORTER_LABEL, None)
        .ok()?;
    Some(out)
}

/// Checks the host's certificate against a pinned fingerprint, or (when
/// pairing, with nothing pinned yet) accepts it and remembers what it saw.
/// Handshake signatures are always verified.
#[derive(Debug)]
pub struct PinnedCert {
    expected: Option<String>,
    seen: Mutex<Option<String>>,
    provider: Arc<CryptoProvider>,
}

impl PinnedCert {
    /// Pins `expected` (hex SHA-256), or pins nothing when pairing.
    pub fn new(expected: Option<&str>) -> Arc<PinnedCert> {
        Arc::new(PinnedCert {
            expected: expected.map(|e| e.to_ascii_lowercase()),
            seen: Mutex::new(None),
            provider: provider(),
        })
    }

    /// The fingerprint the host presented.
    pub fn seen(&self) -> Option<String> {
        self.seen.lock().clone()
    }
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = fingerprint(end_entity);
        *self.seen.lock() = Some(got.clone());
        match &self.expected {
            Some(expected) if *expected != got => Err(rustls::Error::General(format!(
                "certificate fingerprint {got} does not match the pinned {expected}"
            ))),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client configuration that verifies the host with `verifier`.
pub fn client_config(verifier: Arc<PinnedCert>) -> Result<Arc<ClientConfig>, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.enable_early_data = false;
    Ok(Arc::new(config))
}

/// Encrypted bytes a connection may hold before writing them out. rustls
/// takes 64 KiB by default, which splits a frame carrying a full 64 KiB log
/// chunk (plus its JSON) into two socket writes, the second of a few hundred
/// bytes; this is room for several such frames.
const SEND_BUFFER: usize = 256 * 1024;

/// Sizes a connection's send buffer for whole log frames (see `SEND_BUFFER`).
pub fn set_send_buffer<Data>(conn: &mut rustls::ConnectionCommon<Data>) {
    conn.set_buffer_limit(Some(SEND_BUFFER));
}

/// The server name to present (a constant: the certificate is pinned, not named).
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(SERVER_NAME).expect("a valid DNS name")
}

/// Binds a TCP listener; `[::]` listens on IPv6 and IPv4 both where the system allows.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(false);
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    tokio::net::TcpListener::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datadir::DataDir;
    use crate::tasks::chunk::MAX_CHUNK;

    #[test]
    fn a_frame_carrying_a_full_chunk_is_taken_in_one_write() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::resolve(Some(tmp.path().to_owned())).unwrap();
        let config = server_config(&Identity::load_or_create(&dir, "box").unwrap(), None).unwrap();
        // A full chunk of newlines, each escaped, plus its frame's header and JSON.
        let frame = vec![b'x'; 2 * MAX_CHUNK + 256];
        let mut default = rustls::ServerConnection::new(Arc::clone(&config)).unwrap();
        let taken = std::io::Write::write(&mut default.writer(), &frame).unwrap();
        assert!(taken < frame.len(), "rustls's default would split it");
        let mut sized = rustls::ServerConnection::new(config).unwrap();
        set_send_buffer(&mut sized);
        let taken = std::io::Write::write(&mut sized.writer(), &frame).unwrap();
        assert_eq!(taken, frame.len());
    }
}
