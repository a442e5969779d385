//! TLS: the host's server configuration and listener; what both ends share
//! (ALPN, the pinning verifier, the exporter) is `openwork_proto::tls`,
//! re-exported here.
//!
//! TLS 1.3 only, with our own ALPN id, no early data and no session tickets
//! (a resumed session would be a second session to reason about).

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

pub use openwork_proto::tls::{
    ALPN, ALPN_HTTP, DEFAULT_PORT, PinnedCert, SERVER_NAME, TlsError, client_config, exporter,
    fingerprint, provider, server_name, set_send_buffer,
};

use crate::identity::{Identity, OwnerCertificate};

/// The host's TLS server configuration: ALPN `openwork/1` for the raw
/// protocol, `http/1.1` (or none) for browsers.
///
/// A client that offers `openwork/1` always gets the host's own identity
/// certificate, the one native clients pin; any other gets the owner's
/// certificate when one is configured (`owner`), so that browsers need not
/// warn, and renewing it never touches what native clients pinned.
pub(crate) fn server_config(
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

/// Binds a TCP listener; `[::]` listens on IPv6 and IPv4 both where the system allows.
pub(crate) fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
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
