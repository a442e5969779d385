//! TLS as both ends speak it: TLS 1.3 only, the ALPN id, a client verifier
//! that pins the host's certificate by fingerprint, and the exported keying
//! material that binds pairing to one TLS session.
//!
//! No early data and no session tickets (a resumed session would be a second
//! session to reason about). The host's server configuration is the host's.

use parking_lot::Mutex;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::pairing::crypto::EXPORTER_LABEL;

/// Our ALPN protocol id.
pub const ALPN: &[u8] = b"openwork/1";
/// What browsers offer: the host port's HTTP side.
pub const ALPN_HTTP: &[u8] = b"http/1.1";
/// The default TLS port.
pub const DEFAULT_PORT: u16 = 4747;
/// The name clients present in SNI; the certificate is checked by fingerprint, not by name.
pub const SERVER_NAME: &str = "openwork-host";

/// A TLS configuration that cannot be built.
#[derive(Debug, thiserror::Error)]
#[error("TLS configuration: {0}")]
pub struct TlsError(pub String);

/// The crypto provider of every TLS configuration (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The SHA-256 fingerprint (hex) of a certificate.
pub fn fingerprint(cert: &[u8]) -> String {
    Sha256::digest(cert)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
