//! What the host reports about itself: the store probe, the health panel,
//! each runtime's state and the local metrics.

use std::time::{Duration, Instant};

use crate::auth::Principal;
use crate::clock;
use crate::health;
use crate::metrics;
use crate::protocol::{
    ConnectionCounts, HealthCheck, HealthReport, MetricsReport, OpencodeCapability, PairingHealth,
    RuntimeHealth,
};
use crate::runtime::opencode::{RuntimeState, access};
use crate::store::StoreError;
use crate::tasks::TaskError;

use super::HostCore;

/// How long a store probe's verdict is reused, so that callers of `health.get`
/// (anyone may call it) cannot turn it into a stream of writes.
const PROBE_REUSE: Duration = Duration::from_secs(5);
/// How long the store probe may take before the store counts as stalled.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// The last store probe: when, and how it went.
#[derive(Default)]
pub(super) struct StoreProbe {
    last: tokio::sync::Mutex<Option<(Instant, Result<Duration, String>)>>,
}

impl HostCore {
    /// Each runtime's state.
    pub fn runtimes(&self) -> Vec<RuntimeHealth> {
        let opencode = self.opencode.state();
        let (version, message) = match &opencode {
            RuntimeState::Ready { version, .. } => (Some(version.clone()), None),
            RuntimeState::NotInstalled { looked_for } => (
                None,
                Some(format!("not installed (looked for {looked_for})")),
            ),
            RuntimeState::Restarting {
                attempt, reason, ..
            } => (
                None,
                Some(format!("restarting (attempt {attempt}) after: {reason}")),
            ),
            _ => (None, None),
        };
        vec![
            RuntimeHealth {
                name: "builtin".into(),
                state: "ready".into(),
                version: None,
                message: None,
            },
            RuntimeHealth {
                name: "opencode".into(),
                state: opencode.name().into(),
                version,
                message,
            },
        ]
    }

    /// What `initialize` says about OpenCode to `principal`: the operations
    /// listed are those it may call.
    pub fn opencode_capability(&self, principal: &Principal) -> OpencodeCapability {
        let state = self.opencode.state();
        match &state {
            RuntimeState::Ready {
                version,
                operations,
                ..
            } => {
                let none = serde_json::Map::new();
                let admin = principal.has(crate::auth::Scope::Admin);
                OpencodeCapability {
                    state: state.name().into(),
                    version: Some(version.clone()),
                    operations: operations
                        .callable()
                        .filter(|op| admin || access::needs_admin(&op.id, &none).is_none())
                        .map(|op| format!("opencode.{}", op.id))
                        .collect(),
                }
            }
            other => OpencodeCapability {
                state: other.name().into(),
                version: None,
                operations: Vec::new(),
            },
        }
    }

    /// Writes to the store (reusing a recent verdict); how long it took, or why it failed.
    async fn probe_store(&self) -> Result<Duration, String> {
        let mut last = self.probe.last.lock().await;
        if let Some((at, verdict)) = last.as_ref()
            && at.elapsed() < PROBE_REUSE
        {
            return verdict.clone();
        }
        let started = Instant::now();
        let now = clock::now_ms();
        let write = self.store.write(move |c| {
            c.execute(
                "INSERT INTO health_probe (id, at) VALUES (1, ?1) \
                 ON CONFLICT(id) DO UPDATE SET at = excluded.at",
                [now],
            )
        });
        let verdict = match tokio::time::timeout(PROBE_TIMEOUT, write).await {
            Ok(Ok(_)) => Ok(started.elapsed()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "a test write got no answer within {} s (is the disk stalled?)",
                PROBE_TIMEOUT.as_secs()
            )),
        };
        *last = Some((Instant::now(), verdict.clone()));
        verdict
    }

    /// Every health check, in the panel's order.
    pub async fn checks(&self) -> Vec<HealthCheck> {
        let probe = self.probe_store().await;
        let listeners = self.listeners.states();
        vec![
            health::store(&self.data_dir.database(), &probe),
            health::disk(self.data_dir.root(), self.config.health.min_free_mb),
            health::listeners(&listeners, self.listeners.network()),
            health::mdns(&self.discovery.health()),
            health::builtin(self.tasks.roots()),
            health::opencode(
                &self.opencode.state(),
                &self.config.opencode,
                &self.data_dir.root().join("opencode.log"),
            ),
            health::recent_failures(self.metrics.recent()),
        ]
    }

    /// The health panel; `details` adds what needs `tasks.read`. A failing
    /// store shows as a failing check, never as a failed call.
    pub async fn health(&self, details: bool) -> HealthReport {
        let checks = self.checks().await;
        let mut report = HealthReport {
            status: health::overall(&checks).into(),
            version: env!("CARGO_PKG_VERSION").into(),
            host_id: self.identity.host_id.clone(),
            host_name: self.host_name.clone(),
            fingerprint: self.identity.fingerprint.clone(),
            uptime_s: self.uptime_s(),
            started_at: clock::rfc3339(self.started_at_ms),
            listeners: None,
            runtimes: None,
            data_dir: None,
            tasks: None,
            connections: None,
            last_task: None,
            pairing: None,
            checks: None,
            discovery: Some(self.discovery.health()),
        };
        if details {
            let pairing = self.pairing.status();
            report.listeners = Some(self.listeners());
            report.runtimes = Some(self.runtimes());
            report.data_dir = Some(self.data_dir.root().display().to_string());
            report.tasks = self.tasks.counts().await.ok();
            report.connections = Some(self.metrics.active_connections());
            report.last_task = self.tasks.last_finished().await.ok().flatten();
            report.pairing = Some(PairingHealth {
                open: pairing.open,
                expires_at: pairing.expires_at,
                pending: pairing.pending.len() as u32,
            });
            report.checks = Some(checks);
        }
        report
    }

    /// The local metrics.
    pub async fn metrics_report(&self) -> Result<MetricsReport, StoreError> {
        let m = &self.metrics;
        Ok(MetricsReport {
            uptime_s: self.uptime_s(),
            total_uptime_s: m.total_uptime_s(),
            telemetry: m.telemetry(),
            connections: ConnectionCounts {
                accepted: m.get(metrics::CONNECTIONS_ACCEPTED),
                active: m.active_connections(),
                disconnects: m.get(metrics::DISCONNECTS),
                handshake_failures: m.get(metrics::HANDSHAKE_FAILURES),
                auth_failures: m.get(metrics::AUTH_FAILURES),
                refused: m.get(metrics::REFUSED),
            },
            tasks: self.tasks.counts().await.map_err(task_store_error)?,
            last_24h: self
                .tasks
                .outcomes_within(DAY)
                .await
                .map_err(task_store_error)?,
            last_7d: self
                .tasks
                .outcomes_within(DAY * 7)
                .await
                .map_err(task_store_error)?,
        })
    }
}

fn task_store_error(e: TaskError) -> StoreError {
    match e {
        TaskError::Store(e) => e,
        other => StoreError::Read {
            what: "the task records",
            message: other.to_string(),
        },
    }
}
