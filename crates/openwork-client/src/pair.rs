//! The device's side of pairing: SPAKE2 over TLS, key confirmation, and
//! waiting for the owner's approval.

use std::time::Duration;

use base64::Engine;
use serde_json::json;

use super::hosts::KnownHost;
use super::tls::{ConnectError, connect_tls};
use crate::pairing::crypto::{self, Context};
use crate::protocol::{PairingBeginResult, PairingResult};
use crate::rpc::RpcError;
use openwork_proto::scope::Scope;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// What pairing needs.
#[derive(Debug, Clone)]
pub struct PairRequest {
    /// `host:port`.
    pub address: String,
    pub code: String,
    pub device_name: String,
    pub scopes: Option<Vec<Scope>>,
    /// From a QR code or `openwork://` link: the certificate the host must present.
    pub expected_fingerprint: Option<String>,
    /// How long to wait for the owner's approval.
    pub approval_timeout: Duration,
}

/// Why pairing failed.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("the host refused: {}", with_action(.0))]
    Refused(RpcError),
    /// The host's key confirmation did not match, and the host said why
    /// (usually a wrong, expired or replaced code).
    #[error("the host did not accept the code: {}", with_action(.0))]
    CodeRejected(RpcError),
    #[error(
        "the host could not prove it knows the code: the code is wrong, or someone is between you and the host. \
         Check the code shown by `openwork-host pair` and try again"
    )]
    HostNotConfirmed,
    #[error("the connection to the host failed: {0}")]
    Connection(String),
    #[error("no approval from the host's owner within {0:?}")]
    ApprovalTimeout(Duration),
}

/// An error's message and, when the host gave one, what to do about it.
fn with_action(e: &RpcError) -> String {
    match e.action() {
        Some(action) => format!("{} (code {}); {action}", e.message, e.code.0),
        None => e.to_string(),
    }
}

impl From<super::ClientError> for PairError {
    fn from(e: super::ClientError) -> Self {
        match e {
            super::ClientError::Rpc(rpc) => PairError::Refused(rpc),
            other => PairError::Connection(other.to_string()),
        }
    }
}

/// An `openwork://pair?…` link, as in the QR code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairLink {
    pub address: String,
    pub code: String,
    pub fingerprint: Option<String>,
    pub host_id: Option<String>,
}

impl PairLink {
    /// Parses `openwork://pair?host=…&port=…&fp=…&code=…`, or the web app's
    /// `https://ADDR:PORT/#pair?code=…&fp=…&id=…` (the QR code's form).
    pub fn parse(uri: &str) -> Option<PairLink> {
        if let Some(rest) = uri.strip_prefix("https://") {
            return PairLink::parse_web(rest);
        }
        let query = uri.strip_prefix("openwork://pair?")?;
        let mut host = None;
        let mut port = None;
        let mut fingerprint = None;
        let mut code = None;
        let mut host_id = None;
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=')?;
            let value = percent_decode(value)?;
            match key {
                "host" => host = Some(value),
                "port" => port = value.parse::<u16>().ok(),
                "fp" => fingerprint = Some(value),
                "code" => code = Some(value),
                "id" => host_id = Some(value),
                _ => {}
            }
        }
        let host = host?;
        let address = if host.contains(':') {
            format!("[{host}]:{}", port?)
        } else {
            format!("{host}:{}", port?)
        };
        Some(PairLink {
            address,
            code: code?,
            fingerprint,
            host_id,
        })
    }
}

impl PairLink {
    /// `ADDR[:PORT]/#pair?…`: the address from the authority (port 443 when
    /// none), the rest from the fragment.
    fn parse_web(rest: &str) -> Option<PairLink> {
        let (authority, fragment) = rest.split_once("/#pair?")?;
        let address = if authority.starts_with('[') {
            match authority.rsplit_once("]:") {
                Some((host, port)) => format!("{host}]:{}", port.parse::<u16>().ok()?),
                None if authority.ends_with(']') => format!("{authority}:443"),
                None => return None,
            }
        } else {
            match authority.split_once(':') {
                Some((host, port)) if !host.is_empty() => {
                    format!("{host}:{}", port.parse::<u16>().ok()?)
                }
                None if !authority.is_empty() => format!("{authority}:443"),
                _ => return None,
            }
        };
        let mut link = PairLink {
            address,
            code: String::new(),
            fingerprint: None,
            host_id: None,
        };
        for pair in fragment.split('&') {
            let (key, value) = pair.split_once('=')?;
            let value = percent_decode(value)?;
            match key {
                "code" => link.code = value,
                "fp" => link.fingerprint = Some(value),
                "id" => link.host_id = Some(value),
                _ => {}
            }
        }
        (!link.code.is_empty()).then_some(link)
    }

    /// The app's `openwork://pair?…` link for a pairing window (what
    /// `parse` reads back); the host's address percent-encoded (an IPv6
    /// address has colons, and a zone a `%`).
    pub fn app_uri(host: &str, port: u16, code: &str, fingerprint: &str, host_id: &str) -> String {
        format!(
            "openwork://pair?host={}&port={port}&fp={fingerprint}&code={code}&id={host_id}",
            percent_encode(host)
        )
    }

    /// The web app's pairing URL for a pairing window: opens the pairing
    /// screen with the code filled in. The fragment never leaves the browser.
    pub fn web_url(host: &str, port: u16, code: &str, fingerprint: &str, host_id: &str) -> String {
        let host = if host.contains(':') && !host.starts_with('[') {
            // An IPv6 address; a zone (`%eth0`) has no place in a URL.
            format!("[{}]", host.split('%').next().unwrap_or(host))
        } else {
            host.to_owned()
        };
        let authority = if port == 443 {
            host
        } else {
            format!("{host}:{port}")
        };
        format!("https://{authority}/#pair?code={code}&fp={fingerprint}&id={host_id}")
    }
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Pairs with a host and returns what to store.
pub async fn pair(request: &PairRequest) -> Result<KnownHost, PairError> {
    let connected = connect_tls(
        &request.address,
        request.expected_fingerprint.as_deref(),
        Duration::from_secs(15),
    )
    .await?;
    let mut conn = connected.connection;
    let start = crypto::client_start(&request.code, &connected.exporter);
    let begun: PairingBeginResult = conn
        .call(
            "pairing.begin",
            json!({
                "deviceName": request.device_name,
                "scopes": request.scopes,
                "spake": B64.encode(&start.message),
            }),
        )
        .await?;
    let host_message = B64
        .decode(&begun.spake)
        .map_err(|_| PairError::Connection("the host sent a malformed SPAKE2 message".into()))?;
    let host_confirmation = B64.decode(&begun.host_confirm).unwrap_or_default();
    let scope_names: Vec<String> = begun.scopes.iter().map(|s| s.as_str().to_owned()).collect();
    let ctx = Context {
        tls_exporter: &connected.exporter,
        host_fingerprint: &connected.fingerprint,
        device_name: request.device_name.trim(),
        scopes: &scope_names,
        public_key: None,
    };
    let confirmation = match crypto::client_finish(start, &ctx, &host_message, &host_confirmation) {
        Ok(confirmation) => confirmation,
        Err(_) => {
            // The host holds another code than ours. Tell it so with a
            // confirmation that proves nothing (random bytes, so even a
            // host in the middle learns nothing from it): the host counts
            // the wrong code and says why (mistyped, expired, replaced,
            // attempts left, the window closed).
            let mut noise = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut noise);
            let verdict = conn
                .call::<_, serde_json::Value>(
                    "pairing.confirm",
                    json!({"exchangeId": begun.exchange_id, "clientConfirm": B64.encode(noise)}),
                )
                .await;
            return Err(match verdict {
                Err(super::ClientError::Rpc(rpc)) => PairError::CodeRejected(rpc),
                _ => PairError::HostNotConfirmed,
            });
        }
    };
    let confirm = conn.call::<_, PairingResult>(
        "pairing.confirm",
        json!({"exchangeId": begun.exchange_id, "clientConfirm": B64.encode(confirmation)}),
    );
    let result = tokio::time::timeout(request.approval_timeout, confirm)
        .await
        .map_err(|_| PairError::ApprovalTimeout(request.approval_timeout))??;
    Ok(KnownHost {
        name: result.host_name,
        host_id: result.host_id,
        address: request.address.clone(),
        // Pin what the TLS session actually presented: that is the session the code vouched for.
        fingerprint: connected.fingerprint,
        device_id: result.device_id,
        token: result.token.ok_or_else(|| {
            PairError::Connection("the host registered no token for this device".into())
        })?,
        scopes: result.scopes,
        paired_at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_links_parse_with_ipv4_and_ipv6() {
        let link = PairLink::parse(
            "openwork://pair?host=192.168.1.5&port=4747&fp=ab12&code=12345678&id=xyz",
        )
        .unwrap();
        assert_eq!(link.address, "192.168.1.5:4747");
        assert_eq!(link.code, "12345678");
        assert_eq!(link.fingerprint.as_deref(), Some("ab12"));
        assert_eq!(link.host_id.as_deref(), Some("xyz"));
        let v6 = PairLink::parse("openwork://pair?host=fe80%3A%3A1%25eth0&port=1&code=1").unwrap();
        assert_eq!(v6.address, "[fe80::1%eth0]:1");
        assert!(PairLink::parse("https://example.com").is_none());
        assert!(
            PairLink::parse("openwork://pair?host=h&code=1").is_none(),
            "the port is required"
        );
    }

    #[test]
    fn app_links_round_trip_with_ipv4_and_ipv6() {
        let uri = PairLink::app_uri("fe80::1%eth0", 4747, "12345678", "ab12", "xyz");
        assert_eq!(
            uri,
            "openwork://pair?host=fe80%3A%3A1%25eth0&port=4747&fp=ab12&code=12345678&id=xyz"
        );
        let link = PairLink::parse(&uri).expect("parses");
        assert_eq!(link.address, "[fe80::1%eth0]:4747");
        assert_eq!(link.code, "12345678");
        assert_eq!(link.fingerprint.as_deref(), Some("ab12"));
        assert_eq!(link.host_id.as_deref(), Some("xyz"));
        let link =
            PairLink::parse(&PairLink::app_uri("10.0.0.2", 1, "c", "f", "i")).expect("parses");
        assert_eq!(link.address, "10.0.0.2:1");
    }

    #[test]
    fn web_pairing_urls_round_trip() {
        let url = PairLink::web_url("192.168.1.5", 4747, "12345678", "ab12", "xyz");
        assert_eq!(
            url,
            "https://192.168.1.5:4747/#pair?code=12345678&fp=ab12&id=xyz"
        );
        let link = PairLink::parse(&url).unwrap();
        assert_eq!(link.address, "192.168.1.5:4747");
        assert_eq!(link.code, "12345678");
        assert_eq!(link.fingerprint.as_deref(), Some("ab12"));
        assert_eq!(link.host_id.as_deref(), Some("xyz"));
        let v6 = PairLink::web_url("fe80::1%eth0", 4747, "1", "f", "i");
        assert_eq!(v6, "https://[fe80::1]:4747/#pair?code=1&fp=f&id=i");
        assert_eq!(PairLink::parse(&v6).unwrap().address, "[fe80::1]:4747");
        let default_port = PairLink::web_url("desk.example", 443, "1", "f", "i");
        assert_eq!(default_port, "https://desk.example/#pair?code=1&fp=f&id=i");
        assert_eq!(
            PairLink::parse(&default_port).unwrap().address,
            "desk.example:443"
        );
        for bad in [
            "https://h:4747/",
            "https://h:4747/#pair?fp=f",
            "https://h:x/#pair?code=1",
            "https:///#pair?code=1",
            "https://[::1/#pair?code=1",
        ] {
            assert!(PairLink::parse(bad).is_none(), "{bad}");
        }
    }
}
