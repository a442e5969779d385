//! Who is calling: principals and the scopes that gate methods; and a
//! browser's credential, a P-256 key whose signatures over a fresh nonce
//! stand in for a token.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Verifier;
use p256::pkcs8::DecodePublicKey;

pub use openwork_proto::scope::Scope;

/// The party behind a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The OS user, over stdio or the owner-only unix socket: every scope.
    Local,
    /// A network connection that has not authenticated yet.
    Anonymous,
    /// A paired device, authenticated with its credential.
    Device {
        id: String,
        name: String,
        scopes: Vec<Scope>,
    },
}

impl Principal {
    /// Whether the principal has authenticated (or needs no authentication).
    pub(crate) fn is_authenticated(&self) -> bool {
        !matches!(self, Principal::Anonymous)
    }

    /// Whether the principal holds `scope`.
    pub(crate) fn has(&self, scope: Scope) -> bool {
        match self {
            Principal::Local => true,
            Principal::Anonymous => false,
            Principal::Device { scopes, .. } => scopes.contains(&scope),
        }
    }

    /// The scopes held.
    pub(crate) fn scopes(&self) -> Vec<Scope> {
        match self {
            Principal::Local => Scope::ALL.to_vec(),
            Principal::Anonymous => Vec::new(),
            Principal::Device { scopes, .. } => scopes.clone(),
        }
    }

    /// A stable key naming the principal in stored records ("local" or "device:ID").
    pub(crate) fn key(&self) -> String {
        match self {
            Principal::Local => "local".to_owned(),
            Principal::Anonymous => "anonymous".to_owned(),
            Principal::Device { id, .. } => format!("device:{id}"),
        }
    }
}

/// How long an `auth.challenge` nonce may be used.
pub(crate) const CHALLENGE_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// A fresh nonce for `auth.challenge`: 32 random bytes, base64url without padding.
pub(crate) fn new_nonce() -> String {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What a browser signs to authenticate on a connection: the host, the
/// page's origin and the connection's nonce, so that a signature works once,
/// for one host, from one origin.
pub(crate) fn browser_auth_message(
    host_id: &str,
    origin: &str,
    nonce: &str,
    device_id: &str,
) -> String {
    format!("openwork-browser-auth-v1\n{host_id}\n{origin}\n{nonce}\n{device_id}")
}

/// A browser's public key (SPKI DER) that is not a P-256 key.
#[derive(Debug, thiserror::Error)]
#[error(
    "`publicKey` must be a P-256 public key in SPKI DER form, base64url (what WebCrypto's exportKey(\"spki\") gives)"
)]
pub struct BadPublicKey;

/// Parses a browser's public key: SPKI DER of a P-256 key.
pub(crate) fn parse_public_key(spki_der: &[u8]) -> Result<p256::ecdsa::VerifyingKey, BadPublicKey> {
    p256::ecdsa::VerifyingKey::from_public_key_der(spki_der).map_err(|_| BadPublicKey)
}

/// Whether `signature` (base64url of the raw 64-byte r||s WebCrypto gives)
/// is a P-256/SHA-256 signature of `message` under `spki_der`.
pub(crate) fn verify_browser_signature(spki_der: &[u8], message: &[u8], signature: &str) -> bool {
    let Ok(key) = parse_public_key(spki_der) else {
        return false;
    };
    let Ok(raw) = URL_SAFE_NO_PAD.decode(signature.trim_end_matches('=')) else {
        return false;
    };
    let Ok(signature) = p256::ecdsa::Signature::from_slice(&raw) else {
        return false;
    };
    key.verify(message, &signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_browser_signature_verifies_only_over_its_own_message_and_key() {
        use p256::ecdsa::signature::Signer;
        use p256::pkcs8::EncodePublicKey;
        let key = p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let spki = key
            .verifying_key()
            .to_public_key_der()
            .unwrap()
            .as_bytes()
            .to_vec();
        let message = browser_auth_message("HOST", "https://h:1", "n", "d_1");
        let signature: p256::ecdsa::Signature = key.sign(message.as_bytes());
        let encoded = URL_SAFE_NO_PAD.encode(signature.to_bytes());
        assert!(verify_browser_signature(
            &spki,
            message.as_bytes(),
            &encoded
        ));
        let other = browser_auth_message("HOST", "https://evil:1", "n", "d_1");
        assert!(!verify_browser_signature(&spki, other.as_bytes(), &encoded));
        let stranger = p256::ecdsa::SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let stranger = stranger.verifying_key().to_public_key_der().unwrap();
        assert!(!verify_browser_signature(
            stranger.as_bytes(),
            message.as_bytes(),
            &encoded
        ));
        assert!(!verify_browser_signature(
            &spki,
            message.as_bytes(),
            "not base64!"
        ));
        assert!(!verify_browser_signature(
            b"junk",
            message.as_bytes(),
            &encoded
        ));
        assert!(parse_public_key(b"junk").is_err());
    }

    #[test]
    fn principals_hold_the_right_scopes() {
        assert!(Principal::Local.has(Scope::Admin));
        assert!(!Principal::Anonymous.has(Scope::TasksRead));
        let device = Principal::Device {
            id: "d".into(),
            name: "phone".into(),
            scopes: vec![Scope::TasksRead],
        };
        assert!(device.has(Scope::TasksRead) && !device.has(Scope::TasksRun));
    }
}
