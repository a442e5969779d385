//! Where the host listens: the listener registry, the accept loops (unix
//! socket, TLS), and the address devices are shown.

use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::UnixListener;
use tokio_util::task::TaskTracker;

use crate::discovery::Advertisement;
use crate::health::ListenerState;
use crate::pairing::Endpoint;
use crate::protocol::Listener;
use crate::session::deadline::Deadlines;
use crate::session::{self, SessionOptions};
use crate::transport::{self, Framing, FramingMode, http, tls, unix};

use super::{Host, HostCore, HostError};

/// How often the owner's certificate files are checked for a renewal.
const CERTIFICATE_POLL: Duration = Duration::from_secs(2);

/// The listeners the host has, and whether a network listener was asked for.
#[derive(Default)]
pub(super) struct Listeners {
    bound: Mutex<Vec<Bound>>,
    /// Whether a network (TLS) listener was asked for.
    network: AtomicBool,
}

/// A listener and whether its accept loop still runs.
struct Bound {
    listener: Listener,
    accepting: Arc<AtomicBool>,
}

/// Marks a listener as no longer accepting when its accept loop ends, however it ends.
struct Accepting(Arc<AtomicBool>);

impl Drop for Accepting {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

impl Listeners {
    fn lock_listeners(&self) -> parking_lot::MutexGuard<'_, Vec<Bound>> {
        self.bound.lock()
    }

    /// Where the host listens.
    pub(super) fn listeners(&self) -> Vec<Listener> {
        self.lock_listeners()
            .iter()
            .map(|b| b.listener.clone())
            .collect()
    }

    /// Each listener and whether its accept loop still runs, for the health checks.
    pub(super) fn states(&self) -> Vec<ListenerState> {
        self.lock_listeners()
            .iter()
            .map(|b| ListenerState {
                transport: b.listener.transport.clone(),
                address: b.listener.address.clone(),
                accepting: b.accepting.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Whether a network (TLS) listener was asked for.
    pub(super) fn network(&self) -> bool {
        self.network.load(Ordering::Relaxed)
    }

    /// Registers a listener; the guard marks it stopped when its accept loop ends.
    fn add_listener(&self, transport: &str, address: String) -> Accepting {
        let accepting = Arc::new(AtomicBool::new(true));
        self.lock_listeners().push(Bound {
            listener: Listener {
                transport: transport.to_owned(),
                address,
            },
            accepting: Arc::clone(&accepting),
        });
        Accepting(accepting)
    }
}

impl HostCore {
    /// Where the host listens.
    pub fn listeners(&self) -> Vec<Listener> {
        self.listeners.listeners()
    }
}

/// Whether the host advertises itself on the LAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mdns {
    /// Advertise over mDNS (unless config.toml turns discovery off).
    Advertise,
    /// Do not join multicast at all (`serve --no-mdns`).
    Off,
}

impl Host {
    /// Starts every listener, in the one order that is safe: the TLS
    /// listeners first (pairing needs their address), then discovery (it
    /// advertises their port), and the local socket last, so that once it
    /// answers every listener is up (scripts and `status` wait on it).
    /// Returns the bound TLS addresses.
    pub fn serve(
        &self,
        network: &[std::net::SocketAddr],
        mdns: Mdns,
    ) -> Result<Vec<std::net::SocketAddr>, HostError> {
        let bound = self.serve_tls(network)?;
        match mdns {
            Mdns::Advertise => self.advertise(&bound),
            Mdns::Off => self.turn_off_discovery("turned off with --no-mdns"),
        }
        self.serve_unix()?;
        Ok(bound)
    }

    /// Listens on the owner-only unix socket in the data dir.
    pub fn serve_unix(&self) -> Result<(), HostError> {
        let path = self.core.data_dir.socket();
        let listener = unix::bind(&path)?;
        *self.socket.lock() = Some(path.clone());
        let accepting = self
            .core
            .listeners
            .add_listener("unix", path.display().to_string());
        tracing::info!(socket = %path.display(), "listening for local clients");
        let core = Arc::clone(&self.core);
        let connections = self.connections.clone();
        self.background.spawn(async move {
            let _accepting = accepting;
            accept_unix(core, listener, connections).await;
        });
        Ok(())
    }

    /// Listens for TLS connections on each address; returns the bound addresses.
    pub fn serve_tls(
        &self,
        addresses: &[std::net::SocketAddr],
    ) -> Result<Vec<std::net::SocketAddr>, HostError> {
        let names = Arc::new(http::OwnNames::new(
            &crate::discovery::target_host(&self.core.identity.host_id),
            self.core.config.network.advertise_address.as_deref(),
        ));
        let owner = self.owner_certificate(&names)?;
        let config = tls::server_config(&self.core.identity, owner)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        self.core
            .listeners
            .network
            .store(!addresses.is_empty(), Ordering::Relaxed);
        let mut bound = Vec::new();
        for address in addresses {
            let listener = tls::bind(*address).map_err(|source| HostError::Listen {
                address: address.to_string(),
                source,
            })?;
            let local = listener.local_addr().map_err(|source| HostError::Listen {
                address: address.to_string(),
                source,
            })?;
            tracing::info!(address = %local, "listening for devices (TLS)");
            let accepting = self.core.listeners.add_listener("tls", local.to_string());
            bound.push(local);
            let (core, connections) = (Arc::clone(&self.core), self.connections.clone());
            let (acceptor, names) = (acceptor.clone(), Arc::clone(&names));
            self.background.spawn(async move {
                let _accepting = accepting;
                accept_tls(core, listener, acceptor, names, connections).await;
            });
        }
        if let Some(first) = bound.first() {
            let address = self
                .core
                .config
                .network
                .advertise_address
                .clone()
                .unwrap_or_else(|| advertised_address(first.ip()));
            self.core.pairing.set_endpoint(Endpoint {
                address,
                port: first.port(),
            });
        }
        Ok(bound)
    }

    /// The owner's certificate for browsers, if configured, watched for
    /// changes from now on; its names become the host's own (`names`).
    fn owner_certificate(
        &self,
        names: &Arc<http::OwnNames>,
    ) -> Result<Option<Arc<crate::identity::OwnerCertificate>>, HostError> {
        let network = &self.core.config.network;
        let (Some(cert), Some(key)) = (&network.certificate, &network.key) else {
            return Ok(None);
        };
        let root = self.core.data_dir.root();
        let owner = Arc::new(crate::identity::OwnerCertificate::load(
            &root.join(cert),
            &root.join(key),
        )?);
        names.set_certificate_names(owner.names());
        let (watched, names, shutdown) = (
            Arc::clone(&owner),
            Arc::clone(names),
            self.core.shutdown.clone(),
        );
        self.background.spawn(async move {
            let mut tick = tokio::time::interval(CERTIFICATE_POLL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match watched.reload_if_changed() {
                    Ok(true) => {
                        names.set_certificate_names(watched.names());
                        tracing::info!("loaded the renewed certificate for browsers");
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "kept the previous certificate for browsers")
                    }
                }
            }
        });
        Ok(Some(owner))
    }

    /// Advertises the host on the LAN for devices to find, on the TLS
    /// listeners `bound` (as `serve_tls` returned them), unless the config
    /// turns discovery off. Never fails: a problem shows in `health.get`.
    pub fn advertise(&self, bound: &[std::net::SocketAddr]) {
        let discovery = &self.core.discovery;
        if !discovery.config().enabled {
            discovery.turn_off("turned off in config.toml ([discovery] enabled = false)");
            return;
        }
        let Some(first) = bound.first() else {
            discovery.turn_off("the host has no network listener (--listen none)");
            return;
        };
        // One record has one port: advertise the listeners on the first one's.
        let same_port: Vec<_> = bound.iter().filter(|a| a.port() == first.port()).collect();
        let everywhere = same_port.iter().any(|a| a.ip().is_unspecified());
        let ad = Advertisement {
            name: self.core.host_name.clone(),
            host_id: self.core.identity.host_id.clone(),
            fingerprint: self.core.identity.fingerprint.clone(),
            port: first.port(),
            addresses: if everywhere {
                Vec::new()
            } else {
                same_port.iter().map(|a| a.ip()).collect()
            },
            ipv4: same_port
                .iter()
                .any(|a| a.is_ipv4() || a.ip().is_unspecified()),
            ipv6: same_port.iter().any(|a| a.is_ipv6()),
        };
        discovery.start(
            ad,
            Arc::clone(&self.core.pairing),
            self.core.shutdown.clone(),
            &self.background,
        );
    }
}

async fn accept_unix(core: Arc<HostCore>, listener: UnixListener, connections: TaskTracker) {
    let limit = core.config.limits.max_frame_bytes;
    loop {
        let accepted = tokio::select! {
            _ = core.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed on the local socket");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !unix::peer_is_owner(&stream) {
            tracing::warn!("refused a local connection from another user");
            continue;
        }
        let (reader, writer) = transport::framed(stream, FramingMode::Fixed(Framing::Lsp), limit);
        connections.spawn(session::run(
            Arc::clone(&core) as Arc<dyn session::Serving>,
            reader,
            writer,
            SessionOptions::local("unix"),
        ));
    }
}

/// The reply to someone speaking plain text to the TLS port.
const PLAINTEXT_REPLY: &str = r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Invalid Request: this port speaks TLS 1.3; connect with a TLS client such as `openwork-host client`"}}"#;

async fn accept_tls(
    core: Arc<HostCore>,
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    names: Arc<http::OwnNames>,
    connections: TaskTracker,
) {
    let handshake_timeout = Duration::from_millis(core.config.network.handshake_timeout_ms);
    loop {
        let accepted = tokio::select! {
            _ = core.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed on the TLS port");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // The place is taken before the handshake: handshakes cost memory too.
        let admission = match core.admissions.admit(peer.ip()) {
            Ok(admission) => admission,
            Err(_) => {
                core.metrics.connection_refused();
                tracing::warn!(%peer, "refused a connection: every connection is a paired device's and network.max_connections is reached");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        keep_alive(&tcp);
        let (core, acceptor) = (Arc::clone(&core), acceptor.clone());
        let (names, tracker) = (Arc::clone(&names), connections.clone());
        connections.spawn(async move {
            let local = tcp.local_addr();
            let handshake = async {
                // A TLS client starts with a handshake record (0x16); answer
                // anyone else in words rather than with a TLS alert.
                let mut first = [0u8; 1];
                if tcp.peek(&mut first).await.ok() == Some(1) && first[0] != 0x16 {
                    use tokio::io::AsyncWriteExt;
                    let mut tcp = tcp;
                    let reply = format!(
                        "Content-Length: {}\r\n\r\n{PLAINTEXT_REPLY}",
                        PLAINTEXT_REPLY.len()
                    );
                    let _ = tcp.write_all(reply.as_bytes()).await;
                    let _ = tcp.shutdown().await;
                    return None;
                }
                acceptor.accept(tcp).await.ok()
            };
            let evicted = admission.evicted();
            let handshake = async {
                tokio::select! {
                    done = tokio::time::timeout(handshake_timeout, handshake) => done,
                    // Taken over before the handshake ended: as good as failed.
                    _ = evicted.cancelled() => Ok(None),
                }
            };
            let mut stream = match handshake.await {
                Ok(Some(stream)) => stream,
                Ok(None) => {
                    core.metrics.handshake_failed();
                    tracing::debug!(%peer, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    core.metrics.handshake_failed();
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            if stream.get_ref().1.alpn_protocol() != Some(tls::ALPN) {
                if let Ok(local) = local {
                    http::serve(core, names, stream, peer, local, tracker, admission).await;
                }
                return;
            }
            tls::set_send_buffer(stream.get_mut().1);
            let channel_binding = tls::exporter(stream.get_ref().1);
            let (reader, writer) = transport::framed(
                stream,
                FramingMode::Fixed(Framing::Lsp),
                core.config.limits.max_frame_bytes,
            );
            let opts = SessionOptions::network(
                "tls",
                peer.to_string(),
                channel_binding,
                admission,
                Deadlines::from_config(&core.config.network),
            );
            session::run(core, reader, writer, opts).await;
        });
    }
}

/// How long a TCP connection may be quiet before the kernel probes the peer,
/// so that a peer that vanished (no FIN) is found even while the host has
/// nothing to say to it.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

fn keep_alive(tcp: &tokio::net::TcpStream) {
    let probes = socket2::TcpKeepalive::new()
        .with_time(TCP_KEEPALIVE)
        .with_interval(Duration::from_secs(10))
        .with_retries(3);
    let _ = socket2::SockRef::from(tcp).set_tcp_keepalive(&probes);
}

/// The address to show devices: the listener's, unless it listens on every
/// interface, in which case this machine's first LAN IPv4 address.
fn advertised_address(ip: std::net::IpAddr) -> String {
    if !ip.is_unspecified() {
        return ip.to_string();
    }
    let lan = nix::ifaddrs::getifaddrs().ok().and_then(|addrs| {
        addrs
            .filter(|a| a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP))
            .filter_map(|a| a.address?.as_sockaddr_in().map(|v4| v4.ip()))
            .find(|v4| !v4.is_loopback() && !v4.is_link_local())
    });
    lan.map_or_else(|| "127.0.0.1".to_owned(), |v4| v4.to_string())
}
