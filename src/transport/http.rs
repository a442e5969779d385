//! HTTP/1.1 on the TLS port, for browsers (ALPN `http/1.1` or none): the
//! embedded web app, and `/rpc` upgraded to a WebSocket that runs the same
//! session as every other transport. Every request must name the host by one
//! of its own names (DNS rebinding), `/rpc` must come from one of its own
//! origins (cross-site pages), and every response carries a strict CSP.

use parking_lot::RwLock;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::task::TaskTracker;

use crate::session::Serving;
use crate::session::admission::Admission;
use crate::transport::{assets, websocket};

/// The path of the WebSocket endpoint.
pub(crate) const RPC_PATH: &str = "/rpc";

/// The headers on every response.
const SECURITY_HEADERS: [(&str, &str); 5] = [
    ("content-security-policy", assets::CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cross-origin-opener-policy", "same-origin"),
];

/// The names and addresses by which the host is its own origin: a request
/// naming anything else was sent to some other name that resolves here.
#[derive(Debug, Default)]
pub(crate) struct OwnNames {
    /// Lowercase DNS names, without a trailing dot.
    fixed: Vec<String>,
    /// The DNS names in the owner's configured certificate (reloaded with it).
    certificate: RwLock<Vec<String>>,
}

impl OwnNames {
    /// `localhost`, the machine's hostname and its `.local` name, the host's
    /// mDNS name, and the advertised address.
    pub(crate) fn new(mdns_name: &str, advertise_address: Option<&str>) -> OwnNames {
        let mut fixed = vec!["localhost".to_owned(), normalize(mdns_name)];
        if let Ok(name) = nix::unistd::gethostname() {
            let name = normalize(&name.to_string_lossy());
            if !name.is_empty() {
                fixed.push(format!("{name}.local"));
                fixed.push(name);
            }
        }
        if let Some(address) = advertise_address {
            fixed.push(normalize(
                address.trim_start_matches('[').trim_end_matches(']'),
            ));
        }
        fixed.retain(|n| !n.is_empty());
        fixed.dedup();
        OwnNames {
            fixed,
            certificate: RwLock::new(Vec::new()),
        }
    }

    /// Replaces the names taken from the configured certificate.
    pub(crate) fn set_certificate_names(&self, names: Vec<String>) {
        *self.certificate.write() = names.iter().map(|n| normalize(n)).collect();
    }

    /// Whether `authority` (a `Host` header: `name:port`, `[v6]:port`, or a
    /// bare name when the port is 443) names this host on `port`. `local` is
    /// the address the connection arrived on.
    pub(crate) fn allows(&self, authority: &str, port: u16, local: IpAddr) -> bool {
        let Some((host, given_port)) = split_authority(authority) else {
            return false;
        };
        if given_port.unwrap_or(443) != port {
            return false;
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return own_address(ip, local);
        }
        let host = normalize(host);
        self.fixed.contains(&host)
            || self
                .certificate
                .read()
                .iter()
                .any(|n| *n == host || wildcard_matches(n, &host))
    }

    /// Whether `origin` (an `Origin` header) is `https://` and one of the host's own authorities.
    pub(crate) fn allows_origin(&self, origin: &str, port: u16, local: IpAddr) -> bool {
        origin.strip_prefix("https://").is_some_and(|authority| {
            !authority.contains('/') && self.allows(authority, port, local)
        })
    }
}

fn normalize(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// `*.example.com` covers `a.example.com`, not `a.b.example.com`.
fn wildcard_matches(pattern: &str, host: &str) -> bool {
    pattern.strip_prefix("*.").is_some_and(|suffix| {
        host.split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix)
    })
}

/// Splits `host[:port]`; an IPv6 address is bracketed. `None` when malformed.
fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host.contains(':') && !authority.starts_with('[') {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    Some((host, port))
}

/// The connection's own address, loopback, or an address of a local interface.
fn own_address(ip: IpAddr, local: IpAddr) -> bool {
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let ip = canonical(ip);
    if ip == canonical(local) || ip.is_loopback() {
        return true;
    }
    nix::ifaddrs::getifaddrs().is_ok_and(|mut addrs| {
        addrs.any(|a| {
            let Some(address) = a.address else {
                return false;
            };
            let found = address
                .as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())));
            found == Some(ip)
        })
    })
}

/// One HTTP connection: what it needs to answer requests.
struct Connection {
    core: Arc<dyn Serving>,
    names: Arc<OwnNames>,
    peer: SocketAddr,
    local: SocketAddr,
    connections: TaskTracker,
    /// The TCP connection's place in the connection budget: handed to the
    /// WebSocket when the connection upgrades.
    admission: parking_lot::Mutex<Option<Admission>>,
}

/// Serves HTTP/1.1 on an accepted TLS stream until the client leaves, the
/// connection upgrades to a WebSocket, or the host shuts down.
pub(crate) async fn serve<S>(
    core: Arc<dyn Serving>,
    names: Arc<OwnNames>,
    stream: S,
    peer: SocketAddr,
    local: SocketAddr,
    connections: TaskTracker,
    admission: Admission,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shutdown = core.shutdown_token();
    let evicted = admission.evicted();
    let header_timeout = Duration::from_millis(core.config().network.handshake_timeout_ms);
    let conn = Arc::new(Connection {
        core,
        names,
        peer,
        local,
        connections,
        admission: parking_lot::Mutex::new(Some(admission)),
    });
    let service = hyper::service::service_fn(move |req| {
        let conn = Arc::clone(&conn);
        async move { Ok::<_, Infallible>(conn.answer(req)) }
    });
    let http = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(http);
    tokio::select! {
        served = http.as_mut() => {
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "HTTP connection ended");
            }
        }
        // Pushed out of the connection budget before it upgraded.
        _ = evicted.cancelled() => {}
        _ = shutdown.cancelled() => {
            http.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), http).await;
        }
    }
}

type Reply = Response<Full<Bytes>>;

impl Connection {
    fn answer(&self, req: Request<hyper::body::Incoming>) -> Reply {
        let port = self.local.port();
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        if !host.is_some_and(|h| self.names.allows(h, port, self.local.ip())) {
            tracing::debug!(peer = %self.peer, host = ?host, "refused a request for another host name");
            return plain(
                StatusCode::MISDIRECTED_REQUEST,
                "this host does not answer to that name: use its own address or name\n",
            );
        }
        if req.uri().path() == RPC_PATH {
            return self.upgrade(req);
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut reply = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
            reply
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return reply;
        }
        let Some(asset) = assets::find(req.uri().path()) else {
            return plain(StatusCode::NOT_FOUND, "not found\n");
        };
        static_file(asset, req.headers(), req.method() == Method::HEAD)
    }

    /// `/rpc`: checks the origin and the upgrade, then hands the connection to a session.
    fn upgrade(&self, mut req: Request<hyper::body::Incoming>) -> Reply {
        let headers = req.headers();
        let origin = headers
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .map(str::to_owned);
        let Some(origin) = origin.filter(|o| {
            self.names
                .allows_origin(o, self.local.port(), self.local.ip())
        }) else {
            tracing::debug!(peer = %self.peer, "refused a WebSocket from another origin");
            return plain(
                StatusCode::FORBIDDEN,
                "WebSocket connections are accepted only from this host's own pages\n",
            );
        };
        let token = |name: header::HeaderName, want: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(want)))
        };
        let key = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .map(|k| k.as_bytes().to_vec());
        let upgrade_ok = req.method() == Method::GET
            && token(header::CONNECTION, "upgrade")
            && token(header::UPGRADE, "websocket")
            && headers
                .get(header::SEC_WEBSOCKET_VERSION)
                .is_some_and(|v| v == "13");
        let (true, Some(key)) = (upgrade_ok, key) else {
            let mut reply = plain(
                StatusCode::UPGRADE_REQUIRED,
                "/rpc is a WebSocket (RFC 6455, version 13): send a GET with Upgrade: websocket\n",
            );
            let h = reply.headers_mut();
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            h.insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
            return reply;
        };
        let admission = self.admission.lock().take();
        let Some(admission) = admission else {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "this connection has been upgraded to a WebSocket already: open a new one\n",
            );
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
        let upgraded = hyper::upgrade::on(&mut req);
        let (core, peer) = (Arc::clone(&self.core), self.peer);
        self.connections.spawn(async move {
            match upgraded.await {
                Ok(io) => {
                    websocket::run(core, TokioIo::new(io), peer.to_string(), origin, admission)
                        .await
                }
                Err(e) => tracing::debug!(%peer, error = %e, "WebSocket upgrade failed"),
            }
        });
        let mut reply = Response::new(Full::new(Bytes::new()));
        *reply.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = reply.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&accept) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        secure(h);
        reply
    }
}

/// An embedded file, as asked: 304 when the client's copy is current, gzip when it takes it.
fn static_file(asset: &assets::Asset, headers: &HeaderMap, head: bool) -> Reply {
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|t| t.trim() == asset.etag || t.trim() == "*")
        });
    let gzip = asset.gzip.filter(|_| accepts_gzip(headers));
    let (status, body) = if fresh {
        (StatusCode::NOT_MODIFIED, Bytes::new())
    } else {
        let bytes = gzip.unwrap_or(asset.body);
        (StatusCode::OK, Bytes::from_static(bytes))
    };
    let length = body.len();
    let mut reply = Response::new(Full::new(if head { Bytes::new() } else { body }));
    *reply.status_mut() = status;
    let h = reply.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_static(asset.etag));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if asset.immutable {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if status == StatusCode::OK {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        );
        if gzip.is_some() {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        if head {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
    }
    secure(h);
    reply
}

/// Whether `Accept-Encoding` takes gzip (and does not refuse it with `q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

fn plain(status: StatusCode, text: &'static str) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *reply.status_mut() = status;
    let h = reply.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    secure(h);
    reply
}

fn secure(headers: &mut HeaderMap) {
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_checked_with_the_port() {
        let names = OwnNames::new("openwork-abc.local.", Some("box.example"));
        names.set_certificate_names(vec!["*.ts.net".into(), "desk.lan".into()]);
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        for ok in [
            "localhost:4747",
            "LOCALHOST:4747",
            "127.0.0.1:4747",
            "[::1]:4747",
            "openwork-abc.local:4747",
            "box.example:4747",
            "desk.lan:4747",
            "pc.ts.net:4747",
        ] {
            assert!(names.allows(ok, 4747, local), "{ok}");
        }
        for bad in [
            "localhost",
            "localhost:4748",
            "evil.example:4747",
            "a.b.ts.net:4747",
            "192.0.2.1:4747",
            "::1:4747",
            "[::1:4747",
            "",
            ":4747",
            "localhost:x",
        ] {
            assert!(!names.allows(bad, 4747, local), "{bad}");
        }
        assert!(names.allows("localhost", 443, local));
        assert!(names.allows_origin("https://localhost:4747", 4747, local));
        assert!(!names.allows_origin("http://localhost:4747", 4747, local));
        assert!(!names.allows_origin("https://evil.example:4747", 4747, local));
        assert!(!names.allows_origin("null", 4747, local));
    }

    #[test]
    fn gzip_is_served_only_to_those_who_take_it() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(v));
            accepts_gzip(&h)
        };
        assert!(with("gzip, deflate, br"));
        assert!(with("br;q=1.0, gzip;q=0.8"));
        assert!(!with("br"));
        assert!(!with("gzip;q=0"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
