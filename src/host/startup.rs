//! Start-up and shutdown, each written down once, in the order it runs,
//! with why each step is where it is.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock;
use crate::config::Config;
use crate::datadir::DataDir;
use crate::devices::Devices;
use crate::discovery::Discovery;
use crate::identity::Identity;
use crate::metrics::Metrics;
use crate::pairing::{HostFacts, Pairing};
use crate::permissions::Permissions;
use crate::rpc::methods;
use crate::runtime::opencode::OpenCode;
use crate::session::admission::{AdmissionLimits, Admissions};
use crate::session::budget::ReplySizes;
use crate::store::Store;
use crate::tasks::TaskManager;
use crate::tasks::reaper::Reaper;

use super::{Host, HostCore, HostError};

/// How often local metrics are written to the store.
const METRICS_FLUSH: Duration = Duration::from_secs(5);
/// How long shutdown waits for connections to say goodbye.
const CONNECTIONS_GRACE: Duration = Duration::from_secs(10);

/// Start-up, step by step. Nothing listens yet when this returns: the
/// listeners come after (`Host::serve_tls`, `Host::advertise`, and
/// `Host::serve_unix` last, so that once the local socket answers, every
/// listener is up).
pub(super) async fn open(data_dir: DataDir, config: Option<Config>) -> Result<Host, HostError> {
    // 1. The data dir, locked before anything in it is read or written, so
    //    that two hosts never share one.
    data_dir.create()?;
    let lock = data_dir.lock()?;
    // 2. The configuration: every later step is configured by it.
    let config = match config {
        Some(config) => config,
        None => Config::load(&data_dir.config())?,
    };
    // 3. The host's identity (key, certificate, fingerprint): pairing,
    //    discovery and TLS present it.
    let host_name = config.host_name();
    let identity = Identity::load_or_create(&data_dir, &host_name)?;
    // 4. The store: everything that follows keeps its state there.
    let store = Store::open(&data_dir.database())?;
    // 5. The permission policy: a bad policy stops start-up before
    //    anything could run under it.
    let roots = crate::tasks::canonical_roots(&config.tasks);
    let permissions =
        Permissions::new(store.clone(), &config.permissions, &roots).map_err(|message| {
            HostError::Policy {
                path: data_dir.config().display().to_string(),
                message,
            }
        })?;
    // 6. The reaper, before anything that starts child processes exists.
    let reaper = Arc::new(Reaper::start());
    // 7. The runtimes: OpenCode (made, not started: step 12) and the task manager.
    let opencode = OpenCode::new(
        config.opencode.clone(),
        roots
            .first()
            .cloned()
            .unwrap_or_else(|| data_dir.root().to_owned()),
        data_dir.root(),
        Arc::clone(&reaper),
    );
    let tasks = TaskManager::new(
        store.clone(),
        &config.tasks,
        roots,
        Arc::clone(&permissions),
        Arc::clone(&opencode),
        Arc::clone(&reaper),
    )?;
    // 8. Tasks the previous run left unfinished become `interrupted`: no
    //    process runs them any more, and no one may see them as running.
    //    Before the core exists, so before any connection could list,
    //    follow or start a task.
    let interrupted = tasks.recover().await?;
    if interrupted > 0 {
        tracing::warn!(
            interrupted,
            "tasks left unfinished by the previous run are now marked interrupted"
        );
    }
    // 9. Permission requests the previous run left waiting become
    //    `expired`: after step 8, as the tasks that asked are interrupted
    //    and wait for no answer; before any connection, so that no one can
    //    answer them.
    permissions.expire_unanswered().await?;
    // 10. The counters, as stored: the uptime and totals go on from there.
    let metrics = Metrics::load(store.clone(), config.metrics.telemetry).await?;
    // 11. The core: devices, pairing (closed), discovery (off until
    //     `Host::advertise`), the connection budget and the method table.
    let devices = Devices::new(store.clone());
    let pairing = Pairing::new(
        config.pairing.clone(),
        devices.clone(),
        HostFacts {
            host_id: identity.host_id.clone(),
            host_name: host_name.clone(),
            fingerprint: identity.fingerprint.clone(),
        },
    );
    let discovery = Discovery::new(config.discovery.clone());
    let admissions = Admissions::new(AdmissionLimits {
        total: config.network.max_connections,
        unauthenticated: config
            .network
            .max_unauthenticated
            .min(config.network.max_connections),
        per_address: config.network.max_unauthenticated_per_address,
    });
    let core = Arc::new(HostCore {
        discovery,
        config,
        data_dir,
        identity,
        host_name,
        store,
        tasks,
        metrics,
        devices,
        pairing,
        permissions,
        opencode,
        reaper,
        methods: methods::table(),
        shutdown: CancellationToken::new(),
        admissions,
        reply_sizes: ReplySizes::default(),
        started: Instant::now(),
        started_at_ms: clock::now_ms(),
        connections: Default::default(),
        listeners: Default::default(),
        probe: Default::default(),
    });
    // 12. The background work, which uses the core: metrics saved every
    //     few seconds, and OpenCode's supervisor (when OpenCode is on).
    let background = TaskTracker::new();
    background.spawn(flush_metrics(Arc::clone(&core)));
    core.opencode.start(core.shutdown.clone(), &background);
    Ok(Host {
        core,
        connections: TaskTracker::new(),
        background,
        socket: Mutex::new(None),
        _lock: lock,
    })
}

/// Shutdown, step by step: `ShutdownStep::ORDER` is the order `Host::shutdown` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownStep {
    /// Cancels the host's shutdown token: the accept loops stop taking
    /// connections, every connection stops reading and begins to close,
    /// background loops end. First, so that nothing new starts.
    Announce,
    /// Stops every task (each ends `interrupted`). After `Announce`, so no
    /// task starts after it; before `CloseConnections`, because a closing
    /// connection waits (longer, while the host shuts down) for the final
    /// status of the tasks it follows, to deliver it.
    StopTasks,
    /// Lets connections deliver their last messages and close, for up to
    /// `CONNECTIONS_GRACE`.
    CloseConnections,
    /// Waits for the background work to end: accept loops, the metrics
    /// loop, OpenCode's supervisor, the certificate watch, the advertiser.
    StopBackground,
    /// Saves the metrics: after the connections and tasks it counts have ended.
    SaveMetrics,
    /// Stops the reaper: after tasks and OpenCode, the children it guards.
    StopReaper,
    /// Closes the store: nothing writes to it any more.
    CloseStore,
    /// Removes the local socket's file. The data dir's lock is released
    /// after this, when the `Host` is dropped.
    RemoveSocket,
}

impl ShutdownStep {
    /// Every step, in the order they run.
    pub const ORDER: [ShutdownStep; 8] = [
        ShutdownStep::Announce,
        ShutdownStep::StopTasks,
        ShutdownStep::CloseConnections,
        ShutdownStep::StopBackground,
        ShutdownStep::SaveMetrics,
        ShutdownStep::StopReaper,
        ShutdownStep::CloseStore,
        ShutdownStep::RemoveSocket,
    ];

    /// Runs this step on `host`.
    pub(super) async fn run(self, host: &Host) {
        tracing::debug!(step = ?self, "shutdown");
        let core = &host.core;
        match self {
            ShutdownStep::Announce => core.shutdown.cancel(),
            ShutdownStep::StopTasks => core.tasks.shutdown().await,
            ShutdownStep::CloseConnections => {
                host.connections.close();
                if tokio::time::timeout(CONNECTIONS_GRACE, host.connections.wait())
                    .await
                    .is_err()
                {
                    tracing::warn!("some connections did not close in time");
                }
            }
            ShutdownStep::StopBackground => {
                host.background.close();
                host.background.wait().await;
            }
            ShutdownStep::SaveMetrics => {
                if let Err(e) = core.metrics.flush().await {
                    tracing::warn!(error = %e, "could not save metrics");
                }
            }
            ShutdownStep::StopReaper => core.reaper.stop(),
            ShutdownStep::CloseStore => core.store.close(),
            ShutdownStep::RemoveSocket => {
                if let Some(path) = host.socket.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    let _ = std::fs::remove_file(path);
                }
            }
        }
    }
}

async fn flush_metrics(core: Arc<HostCore>) {
    let mut tick = tokio::time::interval(METRICS_FLUSH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = core.shutdown.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = core.metrics.flush().await {
                    tracing::warn!(error = %e, "could not save metrics");
                }
            }
        }
    }
}
