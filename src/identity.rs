//! The host's identity: an ECDSA P-256 key and self-signed certificate made on
//! first start and kept in the data dir.
//!
//! The host id is the base32 SHA-256 of the public key (SPKI), so a renewed
//! certificate keeps the id; the fingerprint clients pin is the hex SHA-256 of
//! the certificate.
//!
//! Also the owner's certificate for browsers (`[network] certificate` and
//! `key`), reloaded when its files change; native clients never see it.

use parking_lot::RwLock;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256, PublicKeyData};
use sha2::{Digest, Sha256};

use crate::datadir::DataDir;
use crate::ids;

/// Errors loading or creating the identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the host key {path} is not a usable P-256 key ({message}); move it away to make a new identity (paired devices will need to pair again)"
    )]
    BadKey { path: String, message: String },
    #[error("cannot make the host certificate: {0}")]
    Certificate(String),
    #[error(
        "{path}: {message} (check [network] certificate and key in config.toml: a PEM chain, leaf first, and its PEM private key)"
    )]
    BadCertificate { path: String, message: String },
}

/// The host's key, certificate and the names derived from them.
#[derive(Clone)]
pub(crate) struct Identity {
    /// base32 SHA-256 of the public key.
    pub host_id: String,
    /// hex SHA-256 of the certificate (DER).
    pub fingerprint: String,
    pub cert_der: Vec<u8>,
    /// The private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("host_id", &self.host_id)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Loads the key and certificate, making whichever is missing.
    pub(crate) fn load_or_create(
        dir: &DataDir,
        host_name: &str,
    ) -> Result<Identity, IdentityError> {
        let key_path = dir.root().join("host.key");
        let cert_path = dir.root().join("host.crt");
        let key = match std::fs::read_to_string(&key_path) {
            Ok(pem) => KeyPair::from_pem(&pem).map_err(|e| IdentityError::BadKey {
                path: key_path.display().to_string(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
                    .map_err(|e| IdentityError::Certificate(e.to_string()))?;
                write_private(&key_path, key.serialize_pem().as_bytes())?;
                // A new key makes any old certificate meaningless.
                let _ = std::fs::remove_file(&cert_path);
                key
            }
            Err(source) => return Err(io_error(&key_path, source)),
        };
        let cert_der = match std::fs::read_to_string(&cert_path) {
            Ok(pem) => match pem_to_der(&pem) {
                Some(der) => der,
                None => make_certificate(&key, host_name, &cert_path)?,
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                make_certificate(&key, host_name, &cert_path)?
            }
            Err(source) => return Err(io_error(&cert_path, source)),
        };
        Ok(Identity {
            host_id: ids::base32(&Sha256::digest(key.subject_public_key_info())),
            fingerprint: hex(&Sha256::digest(&cert_der)),
            cert_der,
            key_der: key.serialize_der(),
        })
    }
}

fn make_certificate(key: &KeyPair, host_name: &str, path: &Path) -> Result<Vec<u8>, IdentityError> {
    let mut names = vec!["openwork-host".to_owned()];
    // A friendly name may be any text ("Café Lab"); only one that is a DNS
    // name can be a certificate name (an IA5String).
    let dns_name = !host_name.is_empty()
        && host_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if host_name != "openwork-host" && dns_name {
        names.push(host_name.to_owned());
    }
    let params =
        CertificateParams::new(names).map_err(|e| IdentityError::Certificate(e.to_string()))?;
    let cert = params
        .self_signed(key)
        .map_err(|e| IdentityError::Certificate(e.to_string()))?;
    std::fs::write(path, cert.pem()).map_err(|e| io_error(path, e))?;
    Ok(cert.der().to_vec())
}

fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()
        .filter(|d| !d.is_empty())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_error(path, e))?;
    file.write_all(bytes).map_err(|e| io_error(path, e))
}

fn io_error(path: &Path, source: std::io::Error) -> IdentityError {
    IdentityError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The owner's certificate for browsers, reloaded when its files change.
pub(crate) struct OwnerCertificate {
    cert_path: PathBuf,
    key_path: PathBuf,
    loaded: RwLock<LoadedCertificate>,
}

/// A loaded certificate, and the files' modification times it was read at.
struct LoadedCertificate {
    stamp: (Option<SystemTime>, Option<SystemTime>),
    key: Arc<CertifiedKey>,
    names: Vec<String>,
}

impl std::fmt::Debug for OwnerCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnerCertificate")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl OwnerCertificate {
    /// Loads the chain and key; an error names the file and what is wrong.
    pub(crate) fn load(
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<OwnerCertificate, IdentityError> {
        let loaded = load_pair(cert_path, key_path)?;
        Ok(OwnerCertificate {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            loaded: RwLock::new(loaded),
        })
    }

    /// The certificate and key to present.
    pub(crate) fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.loaded.read().key)
    }

    /// The DNS names the certificate is for.
    pub(crate) fn names(&self) -> Vec<String> {
        self.loaded.read().names.clone()
    }

    /// Reads the files again if either changed since the last load. `Ok(true)`
    /// when a new certificate is in use; on an error the old one stays.
    pub(crate) fn reload_if_changed(&self) -> Result<bool, IdentityError> {
        let stamp = (modified(&self.cert_path), modified(&self.key_path));
        if self.loaded.read().stamp == stamp {
            return Ok(false);
        }
        let result = load_pair(&self.cert_path, &self.key_path);
        let mut loaded = self.loaded.write();
        match result {
            Ok(fresh) => {
                *loaded = fresh;
                Ok(true)
            }
            Err(e) => {
                // Not tried again until the files change again.
                loaded.stamp = stamp;
                Err(e)
            }
        }
    }
}

fn load_pair(cert_path: &Path, key_path: &Path) -> Result<LoadedCertificate, IdentityError> {
    use rustls::pki_types::pem::PemObject;
    let stamp = (modified(cert_path), modified(key_path));
    let bad = |path: &Path, message: String| IdentityError::BadCertificate {
        path: path.display().to_string(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| bad(cert_path, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(cert_path, e.to_string()))?;
    let Some(leaf) = chain.first() else {
        return Err(bad(cert_path, "no CERTIFICATE block in the file".into()));
    };
    let names = webpki::EndEntityCert::try_from(leaf)
        .map_err(|e| bad(cert_path, format!("not a usable certificate: {e}")))?
        .valid_dns_names()
        .map(str::to_owned)
        .collect();
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| bad(key_path, e.to_string()))?;
    let provider = rustls::crypto::ring::default_provider();
    let key = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        bad(
            key_path,
            format!("not the key of {}: {e}", cert_path.display()),
        )
    })?;
    Ok(LoadedCertificate {
        stamp,
        key: Arc::new(key),
        names,
    })
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn identity_is_stable_and_a_new_certificate_keeps_the_id() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::resolve(Some(tmp.path().to_owned())).unwrap();
        let first = Identity::load_or_create(&dir, "box").unwrap();
        let mode = std::fs::metadata(tmp.path().join("host.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let again = Identity::load_or_create(&dir, "box").unwrap();
        assert_eq!(first.host_id, again.host_id);
        assert_eq!(first.fingerprint, again.fingerprint);
        std::fs::remove_file(tmp.path().join("host.crt")).unwrap();
        let renewed = Identity::load_or_create(&dir, "box").unwrap();
        assert_eq!(renewed.host_id, first.host_id);
        assert_ne!(renewed.fingerprint, first.fingerprint);
        assert_eq!(first.host_id.len(), 52);
        assert_eq!(first.fingerprint.len(), 64);
    }

    #[test]
    fn a_friendly_name_that_is_no_dns_name_still_gets_an_identity() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::resolve(Some(tmp.path().to_owned())).unwrap();
        let identity = Identity::load_or_create(&dir, "Café Lab 2").unwrap();
        assert_eq!(identity.fingerprint.len(), 64);
    }
}
