//! Local metrics: counters kept in the host's own store, never sent anywhere.
//!
//! Increments are counted in memory and written to the store every few
//! seconds and at shutdown, so a flood of events costs no flood of writes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::params;

use crate::store::{Store, StoreError};

/// Connections accepted, all transports.
pub const CONNECTIONS_ACCEPTED: &str = "connections.accepted";
/// Connections that ended for any reason.
pub const DISCONNECTS: &str = "connections.disconnects";
/// Calls refused for lack of authentication, and failed `initialize` auth.
pub const AUTH_FAILURES: &str = "auth.failures";
/// TLS handshakes that failed or timed out.
pub const HANDSHAKE_FAILURES: &str = "connections.handshake_failures";
/// Connections refused at the connection limit.
pub const REFUSED: &str = "connections.refused";

/// The host's counters.
pub struct Metrics {
    store: Store,
    counts: Mutex<Counts>,
    active: AtomicU64,
}

#[derive(Default)]
struct Counts {
    stored: HashMap<String, u64>,
    pending: HashMap<&'static str, u64>,
}

impl Metrics {
    /// Loads the stored counters.
    pub async fn load(store: Store) -> Result<Metrics, StoreError> {
        let stored = store
            .read(|c| {
                let mut stmt = c.prepare("SELECT name, value FROM counters")?;
                let rows = stmt.query_map([], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
                })?;
                rows.collect::<rusqlite::Result<HashMap<_, _>>>()
            })
            .await?;
        Ok(Metrics {
            store,
            counts: Mutex::new(Counts {
                stored,
                pending: HashMap::new(),
            }),
            active: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds one to a counter.
    pub fn incr(&self, name: &'static str) {
        *self.lock().pending.entry(name).or_default() += 1;
    }

    /// A counter's total, stored and pending.
    pub fn get(&self, name: &str) -> u64 {
        let counts = self.lock();
        counts.stored.get(name).copied().unwrap_or(0)
            + counts.pending.get(name).copied().unwrap_or(0)
    }

    pub fn connection_opened(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.incr(CONNECTIONS_ACCEPTED);
    }

    pub fn connection_closed(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
        self.incr(DISCONNECTS);
    }

    pub fn auth_failure(&self) {
        self.incr(AUTH_FAILURES);
    }

    pub fn handshake_failed(&self) {
        self.incr(HANDSHAKE_FAILURES);
    }

    pub fn connection_refused(&self) {
        self.incr(REFUSED);
    }

    /// Connections open now.
    pub fn active_connections(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// Writes pending increments to the store.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let pending: Vec<(&'static str, u64)> = self.lock().pending.drain().collect();
        if pending.is_empty() {
            return Ok(());
        }
        let batch = pending.clone();
        let written = self
            .store
            .write(move |c| {
                let mut stmt = c.prepare_cached(
                    "INSERT INTO counters (name, value) VALUES (?1, ?2) \
                     ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                )?;
                for (name, delta) in &batch {
                    stmt.execute(params![name, *delta as i64])?;
                }
                Ok(())
            })
            .await;
        let mut counts = self.lock();
        match written {
            Ok(()) => {
                for (name, delta) in pending {
                    *counts.stored.entry(name.to_owned()).or_default() += delta;
                }
                Ok(())
            }
            Err(e) => {
                // Keep them for the next flush.
                for (name, delta) in pending {
                    *counts.pending.entry(name).or_default() += delta;
                }
                Err(e)
            }
        }
    }
}
