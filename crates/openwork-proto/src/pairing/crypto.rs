//! The pairing handshake's cryptography: SPAKE2 keyed by the pairing code
//! bound to the TLS session, and key confirmation in both directions.
//!
//! The password is HMAC(TLS exporter, code): each TLS session has its own
//! exported keying material, so a man in the middle, who holds one session
//! with the client and another with the host, runs SPAKE2 with two different
//! passwords and both confirmations fail, even if he knows the code. The
//! SPAKE2 crate has no key confirmation; it is added here: HKDF over the
//! shared key with the transcript as salt gives one MAC key per role, and
//! each side proves it derived the same key over the same transcript.
//!
//! Browsers cannot export keying material: on a WebSocket the exporter is a
//! constant (`transport::websocket::web_channel_binding`), so nothing binds
//! the exchange to the TLS session; the MACs authenticate the browser's
//! public key instead (see README, "Browsers").

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use spake2::{Ed25519Group, Identity, Password, Spake2};
use subtle::ConstantTimeEq;

/// The TLS exporter label both sides use (RFC 5705 / RFC 8446 §7.5).
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-openwork-pairing-v1";
const CLIENT_IDENTITY: &[u8] = b"openwork-client";
const HOST_IDENTITY: &[u8] = b"openwork-host";

/// A pairing handshake that cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairingCryptoError {
    #[error("the SPAKE2 message is malformed")]
    BadMessage,
    #[error("key confirmation failed: the code is wrong, or someone is between you and the host")]
    ConfirmationFailed,
}

/// What both sides agree on besides the code: what the MACs cover.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// 32 bytes of TLS exported keying material under `EXPORTER_LABEL`.
    pub tls_exporter: &'a [u8; 32],
    /// The SHA-256 fingerprint of the host certificate seen in TLS (hex).
    pub host_fingerprint: &'a str,
    pub device_name: &'a str,
    /// The scopes asked for, by wire name.
    pub scopes: &'a [String],
    /// A browser's public key (SPKI DER) to register, which the MACs then
    /// authenticate; `None` for native clients (their transcript is unchanged).
    pub public_key: Option<&'a [u8]>,
}

fn password(code: &str, exporter: &[u8; 32]) -> Password {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(exporter).expect("HMAC takes any key length");
    mac.update(b"openwork pairing code v1\0");
    mac.update(code.as_bytes());
    Password::new(mac.finalize().into_bytes())
}

fn transcript(ctx: &Context<'_>, client_message: &[u8], host_message: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut item = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    item(b"openwork-pairing-transcript-v1");
    item(ctx.tls_exporter);
    item(&Sha256::digest(client_message));
    item(&Sha256::digest(host_message));
    item(ctx.host_fingerprint.as_bytes());
    item(ctx.device_name.as_bytes());
    item(ctx.scopes.join(" ").as_bytes());
    if let Some(key) = ctx.public_key {
        item(key);
    }
    h.finalize().into()
}

/// The two confirmation MACs: (host's, client's).
fn confirmations(key: &[u8], transcript: &[u8; 32]) -> ([u8; 32], [u8; 32]) {
    let hk = Hkdf::<Sha256>::new(Some(transcript), key);
    let mac = |info: &[u8], role: &[u8]| -> [u8; 32] {
        let mut k = [0u8; 32];
        hk.expand(info, &mut k)
            .expect("32 bytes is a valid HKDF length");
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&k).expect("HMAC takes any key length");
        mac.update(transcript);
        mac.update(role);
        mac.finalize().into_bytes().into()
    };
    (
        mac(b"openwork pairing host confirmation", b"host"),
        mac(b"openwork pairing client confirmation", b"client"),
    )
}

/// The client's first step.
pub struct ClientStart {
    state: Spake2<Ed25519Group>,
    /// Sent to the host in `pairing.begin`.
    pub message: Vec<u8>,
}

/// Starts the client side.
pub fn client_start(code: &str, exporter: &[u8; 32]) -> ClientStart {
    let (state, message) = Spake2::<Ed25519Group>::start_a(
        &password(code, exporter),
        &Identity::new(CLIENT_IDENTITY),
        &Identity::new(HOST_IDENTITY),
    );
    ClientStart { state, message }
}

/// The host's answer to `pairing.begin`, and the MAC it expects back.
pub struct HostReply {
    pub message: Vec<u8>,
    pub host_confirmation: [u8; 32],
    expected_client_confirmation: [u8; 32],
}

impl HostReply {
    /// Checks the client's confirmation in constant time.
    pub fn verify_client(&self, client_confirmation: &[u8]) -> bool {
        client_confirmation.len() == 32
            && bool::from(self.expected_client_confirmation.ct_eq(client_confirmation))
    }
}

/// The host's side: answers the client's SPAKE2 message.
pub fn host_respond(
    code: &str,
    ctx: &Context<'_>,
    client_message: &[u8],
) -> Result<HostReply, PairingCryptoError> {
    let (state, message) = Spake2::<Ed25519Group>::start_b(
        &password(code, ctx.tls_exporter),
        &Identity::new(CLIENT_IDENTITY),
        &Identity::new(HOST_IDENTITY),
    );
    let key = state
        .finish(client_message)
        .map_err(|_| PairingCryptoError::BadMessage)?;
    let t = transcript(ctx, client_message, &message);
    let (host_confirmation, expected_client_confirmation) = confirmations(&key, &t);
    Ok(HostReply {
        message,
        host_confirmation,
        expected_client_confirmation,
    })
}

/// The keys the client derived, after the host's SPAKE2 message.
pub struct ClientKeys {
    expected_host: [u8; 32],
    client: [u8; 32],
}

impl ClientKeys {
    /// Whether the host's confirmation is right (constant time).
    pub fn verify_host(&self, host_confirmation: &[u8]) -> bool {
        host_confirmation.len() == 32 && bool::from(self.expected_host.ct_eq(host_confirmation))
    }

    /// The client's confirmation, to send in `pairing.confirm`.
    pub fn confirmation(&self) -> [u8; 32] {
        self.client
    }
}

/// Derives the client's keys from the host's SPAKE2 message.
pub fn client_keys(
    start: ClientStart,
    ctx: &Context<'_>,
    host_message: &[u8],
) -> Result<ClientKeys, PairingCryptoError> {
    let client_message = start.message.clone();
    let key = start
        .state
        .finish(host_message)
        .map_err(|_| PairingCryptoError::BadMessage)?;
    let t = transcript(ctx, &client_message, host_message);
    let (expected_host, client) = confirmations(&key, &t);
    Ok(ClientKeys {
        expected_host,
        client,
    })
}

/// The client's side: checks the host's confirmation (constant time) and
/// returns its own, for `pairing.confirm`.
pub fn client_finish(
    start: ClientStart,
    ctx: &Context<'_>,
    host_message: &[u8],
    host_confirmation: &[u8],
) -> Result<[u8; 32], PairingCryptoError> {
    let keys = client_keys(start, ctx, host_message)?;
    if !keys.verify_host(host_confirmation) {
        return Err(PairingCryptoError::ConfirmationFailed);
    }
    Ok(keys.confirmation())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(exporter: &'a [u8; 32], scopes: &'a [String]) -> Context<'a> {
        Context {
            tls_exporter: exporter,
            host_fingerprint: "ab12",
            device_name: "phone",
            scopes,
            public_key: None,
        }
    }

    #[test]
    fn the_same_code_on_the_same_session_confirms_both_ways() {
        let exporter = [7u8; 32];
        let scopes = vec!["tasks.run".to_owned()];
        let start = client_start("12345678", &exporter);
        let reply = host_respond("12345678", &ctx(&exporter, &scopes), &start.message).unwrap();
        let client_mac = client_finish(
            start,
            &ctx(&exporter, &scopes),
            &reply.message,
            &reply.host_confirmation,
        )
        .unwrap();
        assert!(reply.verify_client(&client_mac));
        assert!(!reply.verify_client(&[0u8; 32]));
        assert!(!reply.verify_client(&client_mac[..31]));
    }

    #[test]
    fn a_wrong_code_fails_on_both_sides() {
        let exporter = [7u8; 32];
        let scopes = vec![];
        let start = client_start("12345679", &exporter);
        let reply = host_respond("12345678", &ctx(&exporter, &scopes), &start.message).unwrap();
        assert_eq!(
            client_finish(
                start,
                &ctx(&exporter, &scopes),
                &reply.message,
                &reply.host_confirmation
            ),
            Err(PairingCryptoError::ConfirmationFailed)
        );
    }

    #[test]
    fn two_tls_sessions_with_the_right_code_still_fail() {
        // What a relay in the middle sees: the client's session and the
        // host's session export different keying material.
        let (client_exporter, host_exporter) = ([1u8; 32], [2u8; 32]);
        let scopes = vec![];
        let start = client_start("12345678", &client_exporter);
        let reply =
            host_respond("12345678", &ctx(&host_exporter, &scopes), &start.message).unwrap();
        assert!(
            client_finish(
                start,
                &ctx(&client_exporter, &scopes),
                &reply.message,
                &reply.host_confirmation
            )
            .is_err()
        );
    }

    #[test]
    fn the_transcript_binds_a_browser_s_public_key() {
        let exporter = [4u8; 32];
        let scopes = vec![];
        let with_key = |key: &'static [u8]| Context {
            public_key: Some(key),
            ..ctx(&exporter, &scopes)
        };
        let start = client_start("12345678", &exporter);
        let reply = host_respond("12345678", &with_key(b"key"), &start.message).unwrap();
        let mac = client_finish(
            start,
            &with_key(b"key"),
            &reply.message,
            &reply.host_confirmation,
        );
        assert!(reply.verify_client(&mac.unwrap()));
        for other in [Some(&b"other"[..]), None] {
            let start = client_start("12345678", &exporter);
            let swapped = Context {
                public_key: other,
                ..ctx(&exporter, &scopes)
            };
            let reply = host_respond("12345678", &swapped, &start.message).unwrap();
            let mac = client_finish(
                start,
                &with_key(b"key"),
                &reply.message,
                &reply.host_confirmation,
            );
            assert_eq!(
                mac,
                Err(PairingCryptoError::ConfirmationFailed),
                "{other:?}"
            );
        }
    }

    #[test]
    fn the_transcript_binds_what_the_device_asked_for() {
        let exporter = [3u8; 32];
        let asked = vec!["tasks.read".to_owned()];
        let tampered = vec!["admin".to_owned()];
        let start = client_start("12345678", &exporter);
        let reply = host_respond("12345678", &ctx(&exporter, &tampered), &start.message).unwrap();
        assert!(
            client_finish(
                start,
                &ctx(&exporter, &asked),
                &reply.message,
                &reply.host_confirmation
            )
            .is_err()
        );
    }

    #[test]
    fn garbage_messages_are_refused() {
        let exporter = [3u8; 32];
        assert!(host_respond("1", &ctx(&exporter, &[]), b"short").is_err());
    }
}
