//! A TCP proxy on loopback that injects faults between a client and the
//! host's TLS port: it cuts connections after a random number of bytes
//! (often mid-frame, mid-TLS-record, or mid-handshake), cuts every
//! connection on demand, or stalls the host's side after a given number of
//! bytes. The upstream address can change, as when a host restarts.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does to connections.
#[derive(Debug, Clone, Copy)]
pub enum Faults {
    /// Forwards everything.
    None,
    /// Cuts each connection once it has carried between `min` and `max`
    /// bytes (both directions together), chosen at random per connection.
    RandomCut { min: usize, max: usize },
    /// Passes the host's first `bytes` to the client, then drops the rest
    /// until the host closes (then the client's side is closed too).
    StallAfter { bytes: usize },
}

struct Shared {
    upstream: Mutex<String>,
    faults: Mutex<Faults>,
    rng: Mutex<StdRng>,
    /// Bumped by `cut_all`: every live connection ends.
    generation: watch::Sender<u64>,
    accepted: AtomicU64,
    cuts: AtomicU64,
    stalls: AtomicU64,
}

/// A running proxy; it stops when dropped.
pub struct Proxy {
    pub address: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.shared.generation.send_modify(|g| *g += 1);
    }
}

impl Proxy {
    /// Listens on 127.0.0.1 and forwards to `upstream`; `seed` makes the cuts repeatable.
    pub async fn start(upstream: &str, faults: Faults, seed: u64) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let address = listener.local_addr().expect("proxy address").to_string();
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream.to_owned()),
            faults: Mutex::new(faults),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            generation: watch::Sender::new(0),
            accepted: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
            stalls: AtomicU64::new(0),
        });
        let task = tokio::spawn({
            let shared = Arc::clone(&shared);
            async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        return;
                    };
                    shared.accepted.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(relay(Arc::clone(&shared), client));
                }
            }
        });
        Proxy {
            address,
            shared,
            task,
        }
    }

    pub fn set_upstream(&self, upstream: &str) {
        *self.shared.upstream.lock().unwrap() = upstream.to_owned();
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock().unwrap() = faults;
    }

    /// Ends every live connection now.
    pub fn cut_all(&self) {
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// Connections accepted from clients.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Connections cut by a fault (random or `cut_all`).
    pub fn cuts(&self) -> u64 {
        self.shared.cuts.load(Ordering::Relaxed)
    }

    /// Connections whose host side has stalled.
    pub fn stalls(&self) -> u64 {
        self.shared.stalls.load(Ordering::Relaxed)
    }
}

/// How one connection ended.
enum End {
    Closed,
    Cut,
}

async fn relay(shared: Arc<Shared>, client: TcpStream) {
    let mut generation = shared.generation.subscribe();
    generation.borrow_and_update();
    let upstream = shared.upstream.lock().unwrap().clone();
    let faults = *shared.faults.lock().unwrap();
    let budget = match faults {
        Faults::RandomCut { min, max } => Some(shared.rng.lock().unwrap().random_range(min..=max)),
        _ => None,
    };
    let stall_after = match faults {
        Faults::StallAfter { bytes } => Some(bytes),
        _ => None,
    };
    // A refused upstream (host down) closes the client's connection at once.
    let Ok(server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let carried = Arc::new(AtomicU64::new(0));
    let over_budget = |carried: &AtomicU64, n: usize| -> (usize, bool) {
        let Some(budget) = budget else {
            return (n, false);
        };
        let before = carried.fetch_add(n as u64, Ordering::Relaxed) as usize;
        if before + n >= budget {
            (budget.saturating_sub(before), true)
        } else {
            (n, false)
        }
    };
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return End::Closed,
                Ok(n) => n,
            };
            let (pass, cut) = over_budget(&carried, n);
            if server_write.write_all(&buf[..pass]).await.is_err() {
                return End::Closed;
            }
            if cut {
                return End::Cut;
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        let mut passed = 0usize;
        let mut stalled = false;
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return End::Closed,
                Ok(n) => n,
            };
            let mut pass = n;
            if let Some(limit) = stall_after {
                pass = n.min(limit.saturating_sub(passed));
                passed += pass;
                if pass < n && !stalled {
                    stalled = true;
                    shared.stalls.fetch_add(1, Ordering::Relaxed);
                }
            }
            let (pass, cut) = over_budget(&carried, pass);
            if pass > 0 && client_write.write_all(&buf[..pass]).await.is_err() {
                return End::Closed;
            }
            if cut {
                return End::Cut;
            }
        }
    };
    let end = tokio::select! {
        end = up => end,
        end = down => end,
        _ = generation.changed() => End::Cut,
    };
    if matches!(end, End::Cut) {
        shared.cuts.fetch_add(1, Ordering::Relaxed);
    }
    // Dropping both halves of both sockets closes them.
}
