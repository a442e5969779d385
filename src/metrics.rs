//! Local metrics: counters kept in the host's own store, never sent anywhere.
//!
//! Increments are counted in memory and written to the store every few
//! seconds and at shutdown, so a flood of events costs no flood of writes.
//! With `[metrics] telemetry = false` nothing is counted or written; the
//! in-memory window of recent failures that the health panel reads is kept
//! either way, since it is never stored.

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::params;

use crate::store::{Store, StoreError};

/// Connections accepted, all transports.
pub(crate) const CONNECTIONS_ACCEPTED: &str = "connections.accepted";
/// Connections that ended for any reason.
pub(crate) const DISCONNECTS: &str = "connections.disconnects";
/// Credentials presented that failed (a device id and token that do not
/// match a paired device). Calls made without any credential are not counted.
pub(crate) const AUTH_FAILURES: &str = "auth.failures";
/// TLS handshakes that failed or timed out.
pub(crate) const HANDSHAKE_FAILURES: &str = "connections.handshake_failures";
/// Connections refused at the connection limit.
pub(crate) const REFUSED: &str = "connections.refused";
/// Milliseconds the host has run, across restarts.
pub(crate) const UPTIME_MS: &str = "host.uptime_ms";

/// An hour in milliseconds: the bucket of `metrics.series`.
pub(crate) const HOUR_MS: i64 = 3_600_000;
/// How many hours of counters are kept (`metrics.series` reaches 168 back).
pub(crate) const HOURS_KEPT: i64 = 8 * 24;

/// How far back the recent-failure window reaches.
pub(crate) const RECENT_WINDOW: Duration = Duration::from_secs(15 * 60);
/// The most failures of one kind remembered in the window, so that a flood costs bounded memory.
const RECENT_CAP: usize = 4096;

/// The host's counters.
pub(crate) struct Metrics {
    store: Store,
    telemetry: bool,
    counts: Mutex<Counts>,
    active: AtomicU64,
    /// When uptime was last added to the counters.
    uptime_mark: Mutex<Instant>,
    recent: Mutex<RecentFailures>,
}

/// Failures seen in the last `RECENT_WINDOW`, oldest first.
#[derive(Default)]
struct RecentFailures {
    auth: VecDeque<Instant>,
    handshakes: VecDeque<Instant>,
    /// Who presented the last failed credential.
    last_auth: Option<String>,
}

/// Failures in the recent window, for the health panel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RecentCounts {
    pub auth_failures: usize,
    pub handshake_failures: usize,
    /// The last failed credential: from where, for which device id (escaped).
    pub last_auth_failure: Option<String>,
}

/// The longest device id shown from a failed credential (it is the caller's text).
const SHOWN_ID: usize = 64;

/// `text` with control characters escaped and cut to `max` characters, for
/// showing what a caller sent.
pub(crate) fn shown(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn note(times: &mut VecDeque<Instant>, now: Instant) {
    prune(times, now);
    if times.len() == RECENT_CAP {
        times.pop_front();
    }
    times.push_back(now);
}

fn prune(times: &mut VecDeque<Instant>, now: Instant) {
    while times
        .front()
        .is_some_and(|t| now.duration_since(*t) > RECENT_WINDOW)
    {
        times.pop_front();
    }
}

#[derive(Default)]
struct Counts {
    stored: HashMap<String, u64>,
    pending: HashMap<&'static str, u64>,
}

impl Metrics {
    /// Loads the stored counters; with `telemetry` off, nothing new is recorded.
    pub(crate) async fn load(store: Store, telemetry: bool) -> Result<Metrics, StoreError> {
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
            telemetry,
            counts: Mutex::new(Counts {
                stored,
                pending: HashMap::new(),
            }),
            active: AtomicU64::new(0),
            uptime_mark: Mutex::new(Instant::now()),
            recent: Mutex::new(RecentFailures::default()),
        })
    }

    /// Whether counters are being recorded.
    pub(crate) fn telemetry(&self) -> bool {
        self.telemetry
    }

    /// Adds one to a counter.
    pub(crate) fn incr(&self, name: &'static str) {
        self.add(name, 1);
    }

    fn add(&self, name: &'static str, n: u64) {
        if self.telemetry {
            *self.counts.lock().pending.entry(name).or_default() += n;
        }
    }

    /// Seconds the host has run in total, across restarts (while telemetry was on).
    pub(crate) fn total_uptime_s(&self) -> u64 {
        let unflushed = if self.telemetry {
            self.uptime_mark.lock().elapsed().as_millis() as u64
        } else {
            0
        };
        (self.get(UPTIME_MS) + unflushed) / 1000
    }

    /// Moves the time run since the last call into the uptime counter.
    fn account_uptime(&self) {
        let mut mark = self.uptime_mark.lock();
        let now = Instant::now();
        let ms = now.duration_since(*mark).as_millis() as u64;
        *mark = now;
        self.add(UPTIME_MS, ms);
    }

    /// Failures in the last `RECENT_WINDOW`.
    pub(crate) fn recent(&self) -> RecentCounts {
        let now = Instant::now();
        let mut recent = self.recent.lock();
        prune(&mut recent.auth, now);
        prune(&mut recent.handshakes, now);
        if recent.auth.is_empty() {
            recent.last_auth = None;
        }
        RecentCounts {
            auth_failures: recent.auth.len(),
            handshake_failures: recent.handshakes.len(),
            last_auth_failure: recent.last_auth.clone(),
        }
    }

    /// A counter's total, stored and pending.
    pub(crate) fn get(&self, name: &str) -> u64 {
        let counts = self.counts.lock();
        counts.stored.get(name).copied().unwrap_or(0)
            + counts.pending.get(name).copied().unwrap_or(0)
    }

    pub(crate) fn connection_opened(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.incr(CONNECTIONS_ACCEPTED);
    }

    pub(crate) fn connection_closed(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
        self.incr(DISCONNECTS);
    }

    /// A credential for `device` presented from `peer` failed.
    pub(crate) fn auth_failure(&self, peer: &str, device: &str) {
        let mut recent = self.recent.lock();
        note(&mut recent.auth, Instant::now());
        recent.last_auth = Some(format!(
            "from {} for device id \"{}\"",
            shown(peer, SHOWN_ID),
            shown(device, SHOWN_ID)
        ));
        drop(recent);
        self.incr(AUTH_FAILURES);
    }

    pub(crate) fn handshake_failed(&self) {
        note(&mut self.recent.lock().handshakes, Instant::now());
        self.incr(HANDSHAKE_FAILURES);
    }

    pub(crate) fn connection_refused(&self) {
        self.incr(REFUSED);
    }

    /// Connections open now.
    pub(crate) fn active_connections(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// The stored counters hour by hour since `since` (ms, an hour's start):
    /// `(hour, name, value)`. Increments not yet flushed count in the current hour.
    pub(crate) async fn hourly(&self, since: i64) -> Result<Vec<(i64, String, u64)>, StoreError> {
        let mut rows = self
            .store
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT hour, name, value FROM counter_hours WHERE hour >= ?1",
                )?;
                let rows = stmt.query_map([since], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)? as u64,
                    ))
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        let hour = crate::clock::now_ms() / HOUR_MS * HOUR_MS;
        for (name, value) in self.counts.lock().pending.iter() {
            if *name != UPTIME_MS {
                rows.push((hour, (*name).to_owned(), *value));
            }
        }
        Ok(rows)
    }

    /// Writes pending increments (and the time run since the last flush) to the store.
    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
        if !self.telemetry {
            return Ok(());
        }
        self.account_uptime();
        let pending: Vec<(&'static str, u64)> = self.counts.lock().pending.drain().collect();
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
                // The same increments by the hour they were written in, for
                // `metrics.series` (the time run is a total only).
                let hour = crate::clock::now_ms() / HOUR_MS * HOUR_MS;
                let mut by_hour = c.prepare_cached(
                    "INSERT INTO counter_hours (hour, name, value) VALUES (?1, ?2, ?3) \
                     ON CONFLICT(hour, name) DO UPDATE SET value = value + excluded.value",
                )?;
                for (name, delta) in batch.iter().filter(|(name, _)| *name != UPTIME_MS) {
                    by_hour.execute(params![hour, name, *delta as i64])?;
                }
                // Hours older than the longest series asked for are not kept.
                c.prepare_cached("DELETE FROM counter_hours WHERE hour < ?1")?
                    .execute([hour - HOURS_KEPT * HOUR_MS])?;
                Ok(())
            })
            .await;
        let mut counts = self.counts.lock();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recent_window_forgets_old_failures_and_stays_bounded() {
        let start = Instant::now();
        let mut times = VecDeque::new();
        note(&mut times, start);
        note(&mut times, start + RECENT_WINDOW + Duration::from_secs(1));
        assert_eq!(times.len(), 1, "the first one is out of the window");
        for i in 0..RECENT_CAP + 10 {
            note(
                &mut times,
                start + RECENT_WINDOW * 2 + Duration::from_millis(i as u64),
            );
        }
        assert_eq!(times.len(), RECENT_CAP);
    }

    #[tokio::test]
    async fn telemetry_off_records_nothing_and_on_accumulates_uptime() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("m.db")).unwrap();
        let off = Metrics::load(store.clone(), false).await.unwrap();
        off.connection_opened();
        off.auth_failure("192.0.2.7:5", "d\nx");
        off.flush().await.unwrap();
        assert_eq!(off.get(CONNECTIONS_ACCEPTED), 0);
        assert_eq!(off.active_connections(), 1, "the live gauge is kept");
        assert_eq!(off.recent().auth_failures, 1, "the health window is kept");
        assert_eq!(
            off.recent().last_auth_failure.as_deref(),
            Some("from 192.0.2.7:5 for device id \"d\\nx\"")
        );

        let on = Metrics::load(store.clone(), true).await.unwrap();
        on.connection_opened();
        std::thread::sleep(Duration::from_millis(30));
        on.flush().await.unwrap();
        let again = Metrics::load(store.clone(), true).await.unwrap();
        assert_eq!(again.get(CONNECTIONS_ACCEPTED), 1);
        // By the hour too, stored and (after a restart) read back; uptime is a total only.
        let hourly = again.hourly(0).await.unwrap();
        assert_eq!(hourly.len(), 1, "{hourly:?}");
        assert_eq!(hourly[0].1, CONNECTIONS_ACCEPTED);
        assert_eq!(hourly[0].2, 1);
        assert_eq!(hourly[0].0 % HOUR_MS, 0);
        assert!(again.get(UPTIME_MS) >= 30, "{}", again.get(UPTIME_MS));
        store.close();
    }
}
