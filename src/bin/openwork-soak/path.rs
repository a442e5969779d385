//! One phone's network path to the host: a TCP relay on loopback that can
//! cut its connections cleanly, go silent on them (a NAT that forgot the
//! mapping, a roam to a new address), take the link down for a while, and add
//! latency and a bandwidth limit.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The state of the path, read by every connection on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathState {
    /// False while the link is down: nothing moves (bytes wait, as TCP
    /// retransmits them; new connections are accepted but hang).
    pub up: bool,
    /// The phone's address generation: connections made in an older one are
    /// silent for good (their packets go nowhere), never closed.
    pub epoch: u64,
    /// Bumped to close every live connection (a clean cut: FIN both ways).
    pub cut: u64,
    /// Added to every piece of data in each direction.
    pub latency: Duration,
    /// Bytes per second in each direction; 0 is unlimited.
    pub rate: u64,
}

impl Default for PathState {
    fn default() -> Self {
        PathState {
            up: true,
            epoch: 0,
            cut: 0,
            latency: Duration::ZERO,
            rate: 0,
        }
    }
}

/// A running path; it stops when `stop` is cancelled or it is dropped.
pub struct NetPath {
    pub address: String,
    state: watch::Sender<PathState>,
    stop: CancellationToken,
    accepted: Arc<AtomicU64>,
}

impl Drop for NetPath {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl NetPath {
    /// Listens on 127.0.0.1 and relays to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<NetPath> {
        Self::start_at(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), upstream).await
    }

    /// Listens on `listen` and relays to `upstream`. (The web app is served
    /// only under the host's own port: a browser's path listens on another
    /// loopback address with the host's port.)
    pub async fn start_at(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<NetPath> {
        let listener = TcpListener::bind(listen).await?;
        let address = listener.local_addr()?.to_string();
        let (state, _) = watch::channel(PathState::default());
        let stop = CancellationToken::new();
        let accepted = Arc::new(AtomicU64::new(0));
        tokio::spawn({
            let state = state.clone();
            let stop = stop.clone();
            let accepted = Arc::clone(&accepted);
            async move {
                loop {
                    let client = tokio::select! {
                        _ = stop.cancelled() => return,
                        accepted = listener.accept() => match accepted {
                            Ok((client, _)) => client,
                            Err(_) => {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        },
                    };
                    accepted.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(relay(client, upstream, state.subscribe(), stop.clone()));
                }
            }
        });
        Ok(NetPath {
            address,
            state,
            stop,
            accepted,
        })
    }

    pub fn update(&self, change: impl FnOnce(&mut PathState)) {
        self.state.send_modify(change);
    }

    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

/// The loopback address a connection of address generation `epoch` comes from.
fn source_for(epoch: u64) -> Ipv4Addr {
    let n = (epoch % 250) as u8;
    Ipv4Addr::new(127, 0, 1 + n / 200, 2 + n % 200)
}

async fn connect_from(epoch: u64, upstream: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source_for(epoch).into(), 0))?;
    socket.connect(upstream).await
}

async fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    mut state: watch::Receiver<PathState>,
    stop: CancellationToken,
) {
    let born = *state.borrow_and_update();
    // While the link is down the host is unreachable: wait for it to come back
    // (the client's own connect timeout decides how long it waits).
    let up = state.wait_for(|s| s.up || s.epoch != born.epoch || s.cut != born.cut);
    let ready = tokio::select! {
        _ = stop.cancelled() => return,
        ready = up => ready.map(|s| *s).ok(),
    };
    let Some(now) = ready else { return };
    if now.cut != born.cut {
        return;
    }
    if now.epoch != born.epoch {
        // Made from an address the phone no longer has: it just hangs.
        hang(client, stop).await;
        return;
    }
    let Ok(server) = connect_from(born.epoch, upstream).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let silent = CancellationToken::new();
    let up = pipe(
        client_read,
        server_write,
        state.clone(),
        born,
        silent.clone(),
    );
    let down = pipe(
        server_read,
        client_write,
        state.clone(),
        born,
        silent.clone(),
    );
    let cut = async {
        let _ = state
            .wait_for(|s| s.cut != born.cut && s.epoch == born.epoch)
            .await;
    };
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = cut => {}
        _ = async { tokio::join!(up, down) } => {}
    }
}

/// Keeps a connection open and reads nothing more from it, until the end.
async fn hang(client: TcpStream, stop: CancellationToken) {
    let (mut read, _write) = client.into_split();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            n = read.read(&mut buf) => match n {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
        }
    }
}

/// One direction: reads, delays by the latency, limits the rate, holds
/// everything while the link is down, and discards everything (without
/// closing) once the phone's address has changed.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: watch::Receiver<PathState>,
    born: PathState,
    silent: CancellationToken,
) {
    // Read ahead into a bounded queue, so that latency does not cost throughput.
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(64);
    let reader = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if tx.send((Instant::now(), buf[..n].to_vec())).await.is_err() {
                return;
            }
        }
    };
    let writer = async move {
        let mut state = state;
        while let Some((read_at, bytes)) = rx.recv().await {
            let now = *state.borrow_and_update();
            if now.epoch != born.epoch || silent.is_cancelled() {
                // The old address is gone: drop everything, say nothing.
                silent.cancel();
                continue;
            }
            tokio::time::sleep_until(read_at + now.latency).await;
            // A link that is down holds the data until it is back.
            let back = state
                .wait_for(|s| s.up || s.epoch != born.epoch || s.cut != born.cut)
                .await
                .map(|s| *s);
            let Ok(now) = back else { return };
            if now.epoch != born.epoch {
                silent.cancel();
                continue;
            }
            if now.cut != born.cut {
                return;
            }
            if to.write_all(&bytes).await.is_err() {
                return;
            }
            if now.rate > 0 {
                let pause = Duration::from_secs_f64(bytes.len() as f64 / now.rate as f64);
                tokio::time::sleep(pause).await;
            }
        }
        if silent.is_cancelled() {
            // Closing would tell the other end: a dead mapping says nothing.
            std::future::pending::<()>().await;
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}
