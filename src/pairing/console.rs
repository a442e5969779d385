//! One-time links that enrol a browser on this machine as the owner's console (`openwork-host ui`).
//!
//! The owner asks over the local socket (`console.link`); the link is
//! `https://localhost:PORT/#console?secret=…`, the secret in the fragment so
//! that no request or log carries it. The browser redeems it once, over its
//! WebSocket (`console.enrol`), registering a key as a phone does at pairing;
//! the device it gets is the owner's (`admin` and the default scopes). Being
//! on localhost gives nothing by itself: the secret is what carries authority,
//! and it is taken only from a page whose origin is a loopback name, over a
//! connection from a loopback address.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use super::{Pairing, check_device_name, within};
use crate::auth::{BadPublicKey, Scope, parse_public_key};
use crate::clock;
use crate::protocol::{ConsoleEnrolParams, ConsoleLink, PairingResult};
use crate::store::StoreError;

/// How long a link works when `ui` gives no `--ttl`.
pub(crate) const DEFAULT_TTL_S: u64 = 120;
/// The shortest and longest a link may work.
pub(crate) const TTL_RANGE_S: (u64, u64) = (1, 600);
/// Links remembered at once (used and expired ones are kept a while to say so).
const MAX_LINKS: usize = 64;
/// How long a used or expired link is remembered, to say "used" or "expired".
const REMEMBER: Duration = Duration::from_secs(3600);
/// The device name when the browser gives none.
pub(crate) const DEFAULT_NAME: &str = "Owner's console";

/// Why a console link call failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("`ttlS` must be {} to {} seconds", TTL_RANGE_S.0, TTL_RANGE_S.1)]
    BadTtl,
    #[error("the host has no TLS listener, so a browser has nothing to open")]
    NoListener,
    #[error(
        "the host does not listen on this machine's loopback address (only on {listening}), so a browser here cannot open https://localhost"
    )]
    NoLoopbackListener { listening: String },
    #[error("a console link is redeemed by a browser, over the host's WebSocket (`/rpc`)")]
    NotBrowser,
    #[error(
        "a console link works only in a browser on the host's own machine, on a page opened at https://localhost (this connection: page {origin}, from {peer})"
    )]
    NotLocal { origin: String, peer: String },
    #[error("this console link was already used (a link enrols one browser, once)")]
    Used,
    #[error("this console link has expired")]
    Expired,
    #[error("this is not a console link of this host (or the host restarted since it was made)")]
    Unknown,
    #[error(transparent)]
    BadKey(#[from] BadPublicKey),
    #[error("`publicKey` is not base64url")]
    BadKeyEncoding,
    #[error("{0}")]
    BadName(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Link {
    expires_at: Instant,
    used: bool,
}

/// The links made and not yet forgotten, by the SHA-256 of their secret.
#[derive(Default)]
pub(super) struct Links {
    links: Mutex<HashMap<[u8; 32], Link>>,
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

impl Links {
    fn prune(links: &mut HashMap<[u8; 32], Link>, now: Instant) {
        links.retain(|_, l| l.expires_at + REMEMBER > now);
        while links.len() >= MAX_LINKS {
            let Some(oldest) = links
                .iter()
                .min_by_key(|(_, l)| l.expires_at)
                .map(|(k, _)| *k)
            else {
                break;
            };
            links.remove(&oldest);
        }
    }

    fn issue(&self, ttl: Duration) -> String {
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
        let secret = URL_SAFE_NO_PAD.encode(bytes);
        let now = Instant::now();
        let mut links = self.links.lock();
        Self::prune(&mut links, now);
        links.insert(
            digest(&secret),
            Link {
                expires_at: now + ttl,
                used: false,
            },
        );
        secret
    }

    /// Uses the link up: any later try is refused, whatever happens next.
    fn redeem(&self, secret: &str) -> Result<(), ConsoleError> {
        let now = Instant::now();
        let mut links = self.links.lock();
        let link = links
            .get_mut(&digest(secret))
            .ok_or(ConsoleError::Unknown)?;
        if link.used {
            return Err(ConsoleError::Used);
        }
        link.used = true;
        if link.expires_at <= now {
            return Err(ConsoleError::Expired);
        }
        Ok(())
    }
}

/// Whether `origin` (`https://NAME[:PORT]`) names this machine by a loopback name.
pub(crate) fn is_loopback_origin(origin: &str) -> bool {
    let Some(authority) = origin.strip_prefix("https://") else {
        return false;
    };
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.to_canonical().is_loopback())
}

/// Whether a connection's peer address (`IP:PORT`) is a loopback address.
pub(crate) fn is_loopback_peer(peer: &str) -> bool {
    peer.parse::<SocketAddr>()
        .is_ok_and(|a| a.ip().to_canonical().is_loopback())
}

impl Pairing {
    /// Where devices reach the host (the address in pairing links, the TLS
    /// port), once a TLS listener is bound.
    pub(crate) fn endpoint(&self) -> Option<super::Endpoint> {
        self.endpoint.lock().clone()
    }

    /// Makes a one-time link that enrols a browser on this machine as the
    /// owner's console, for the TLS listener bound to `tls_listeners` (the
    /// addresses the host listens on): the first that takes loopback
    /// connections gives the port.
    pub(crate) fn console_link(
        &self,
        ttl_s: Option<u64>,
        tls_listeners: &[SocketAddr],
    ) -> Result<ConsoleLink, ConsoleError> {
        let ttl_s = ttl_s.unwrap_or(DEFAULT_TTL_S);
        if !(TTL_RANGE_S.0..=TTL_RANGE_S.1).contains(&ttl_s) {
            return Err(ConsoleError::BadTtl);
        }
        if tls_listeners.is_empty() {
            return Err(ConsoleError::NoListener);
        }
        let port = tls_listeners
            .iter()
            .find(|a| a.ip().is_unspecified() || a.ip().to_canonical().is_loopback())
            .map(|a| a.port())
            .ok_or_else(|| ConsoleError::NoLoopbackListener {
                listening: tls_listeners
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let secret = self.console.issue(Duration::from_secs(ttl_s));
        let authority = if port == 443 {
            "localhost".to_owned()
        } else {
            format!("localhost:{port}")
        };
        Ok(ConsoleLink {
            url: format!(
                "https://{authority}/#console?secret={secret}&fp={}&id={}",
                self.facts.fingerprint, self.facts.host_id
            ),
            expires_at: clock::rfc3339(clock::now_ms() + ttl_s as i64 * 1000),
            port,
            fingerprint: self.facts.fingerprint.clone(),
            host_id: self.facts.host_id.clone(),
        })
    }

    /// Redeems a console link from a browser's connection (`origin` is its
    /// page's origin, `None` off a WebSocket; `peer` its address): registers
    /// the browser's key as the owner's console.
    pub(crate) async fn console_enrol(
        &self,
        origin: Option<&str>,
        peer: &str,
        params: ConsoleEnrolParams,
    ) -> Result<PairingResult, ConsoleError> {
        let origin = origin.ok_or(ConsoleError::NotBrowser)?;
        if !is_loopback_origin(origin) || !is_loopback_peer(peer) {
            return Err(ConsoleError::NotLocal {
                origin: crate::metrics::shown(origin, 100),
                peer: peer.to_owned(),
            });
        }
        let name = params
            .device_name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .unwrap_or(DEFAULT_NAME)
            .to_owned();
        check_device_name(&name).map_err(ConsoleError::BadName)?;
        let key = URL_SAFE_NO_PAD
            .decode(params.public_key.trim_end_matches('='))
            .map_err(|_| ConsoleError::BadKeyEncoding)?;
        parse_public_key(&key)?;
        self.console.redeem(&params.secret)?;
        let mut scopes = self.config.default_scopes.clone();
        scopes.push(Scope::Admin);
        let scopes = within(&scopes, &Scope::ALL);
        let device = self
            .devices
            .create_console(&name, &scopes, peer, key)
            .await?;
        tracing::info!(device = %device.id, peer, "the owner's console was enrolled");
        Ok(PairingResult {
            device_id: device.id,
            token: None,
            scopes,
            host_id: self.facts.host_id.clone(),
            host_name: self.facts.host_name.clone(),
            fingerprint: self.facts.fingerprint.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_works_once_and_not_after_it_expires() {
        let links = Links::default();
        let secret = links.issue(Duration::from_secs(60));
        assert!(links.redeem(&secret).is_ok());
        assert!(matches!(links.redeem(&secret), Err(ConsoleError::Used)));
        assert!(matches!(links.redeem("nope"), Err(ConsoleError::Unknown)));
        let expired = links.issue(Duration::ZERO);
        assert!(matches!(links.redeem(&expired), Err(ConsoleError::Expired)));
        assert!(matches!(links.redeem(&expired), Err(ConsoleError::Used)));
    }

    #[tokio::test]
    async fn a_link_needs_a_tls_listener_that_takes_loopback_connections() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("h.db")).unwrap();
        let pairing = Pairing::new(
            super::super::PairingConfig::default(),
            crate::devices::Devices::new(store.clone()),
            super::super::HostFacts {
                host_id: "hostid".into(),
                host_name: "desk".into(),
                fingerprint: "ab".into(),
            },
        );
        assert!(matches!(
            pairing.console_link(None, &[]),
            Err(ConsoleError::NoListener)
        ));
        let lan: SocketAddr = "192.168.1.10:4747".parse().unwrap();
        assert!(matches!(
            pairing.console_link(None, &[lan]),
            Err(ConsoleError::NoLoopbackListener { .. })
        ));
        let every: SocketAddr = "[::]:4848".parse().unwrap();
        let link = pairing.console_link(None, &[lan, every]).unwrap();
        assert!(
            link.url
                .starts_with("https://localhost:4848/#console?secret="),
            "{}",
            link.url
        );
        assert!(link.url.ends_with("&fp=ab&id=hostid"), "{}", link.url);
        assert!(matches!(
            pairing.console_link(Some(0), &[every]),
            Err(ConsoleError::BadTtl)
        ));
        store.close();
    }

    #[test]
    fn links_are_bounded() {
        let links = Links::default();
        let first = links.issue(Duration::from_secs(60));
        for _ in 0..MAX_LINKS * 2 {
            links.issue(Duration::from_secs(600));
        }
        assert!(links.links.lock().len() <= MAX_LINKS);
        assert!(matches!(links.redeem(&first), Err(ConsoleError::Unknown)));
    }

    #[test]
    fn only_loopback_names_and_peers_count_as_this_machine() {
        for yes in [
            "https://localhost:4747",
            "https://LOCALHOST",
            "https://127.0.0.1:4747",
            "https://[::1]:4747",
        ] {
            assert!(is_loopback_origin(yes), "{yes}");
        }
        for no in [
            "http://localhost:4747",
            "https://localhost.evil.example:4747",
            "https://desk.local:4747",
            "https://192.168.1.10:4747",
            "https://[fe80::1]:4747",
            "null",
        ] {
            assert!(!is_loopback_origin(no), "{no}");
        }
        assert!(is_loopback_peer("127.0.0.1:5000"));
        assert!(is_loopback_peer("[::1]:5000"));
        assert!(is_loopback_peer("[::ffff:127.0.0.1]:5000"));
        assert!(!is_loopback_peer("192.168.1.2:5000"));
        assert!(!is_loopback_peer("garbage"));
    }
}
