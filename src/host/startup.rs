//! Start-up and shutdown, each written down once, in the order it runs,
//! with why each step is where it is.

use parking_lot::Mutex;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock;
use crate::config::Config;
use crate::datadir::{DataDir, DataDirLock};
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

/// Start-up: each step, in the order it runs; each step's doc says why it
/// is where it is. Nothing listens yet when this returns: the listeners
/// come after, in the order `Host::serve` (listeners.rs) writes down.
pub(super) async fn open(data_dir: DataDir, config: Option<Config>) -> Result<Host, HostError> {
    let lock = lock_data_dir(&data_dir)?;
    let config = load_config(&data_dir, config)?;
    let (host_name, identity) = load_identity(&data_dir, &config)?;
    let store = open_store(&data_dir)?;
    let (permissions, roots) = load_policy(&data_dir, &config, &store)?;
    let reaper = start_reaper();
    let (opencode, tasks) =
        make_runtimes(&data_dir, &config, roots, &store, &permissions, &reaper)?;
    recover_tasks(&tasks).await?;
    expire_unanswered_requests(&permissions).await?;
    let metrics = load_metrics(&store, &config).await?;
    let parts = Parts {
        data_dir,
        config,
        host_name,
        identity,
        store,
        permissions,
        reaper,
        opencode,
        tasks,
        metrics,
    };
    let core = assemble_core(parts);
    let background = start_background(&core);
    Ok(Host {
        core,
        connections: TaskTracker::new(),
        background,
        socket: Mutex::new(None),
        _lock: lock,
    })
}

/// Creates the data dir and takes its lock. First: nothing in the data dir
/// is read or written before, so that two hosts never share one.
fn lock_data_dir(data_dir: &DataDir) -> Result<DataDirLock, HostError> {
    data_dir.create()?;
    Ok(data_dir.lock()?)
}

/// Reads config.toml, unless the embedder gave a configuration: every
/// later step is configured by it.
fn load_config(data_dir: &DataDir, given: Option<Config>) -> Result<Config, HostError> {
    Ok(match given {
        Some(config) => config,
        None => Config::load(&data_dir.config())?,
    })
}

/// The host's name, and its key, certificate and fingerprint (loaded or
/// created): TLS, pairing and discovery present them.
fn load_identity(data_dir: &DataDir, config: &Config) -> Result<(String, Identity), HostError> {
    let host_name = config.host_name();
    let identity = Identity::load_or_create(data_dir, &host_name)?;
    Ok((host_name, identity))
}

/// Opens the store: every later step keeps its state there.
fn open_store(data_dir: &DataDir) -> Result<Store, HostError> {
    Ok(Store::open(&data_dir.database())?)
}

/// Compiles the permission policy (and the workspace roots it guards): a
/// bad policy stops start-up before anything could run under it.
fn load_policy(
    data_dir: &DataDir,
    config: &Config,
    store: &Store,
) -> Result<(Arc<Permissions>, Vec<PathBuf>), HostError> {
    let roots = crate::tasks::canonical_roots(&config.tasks);
    let permissions =
        Permissions::new(store.clone(), &config.permissions, &roots).map_err(|message| {
            HostError::Policy {
                path: data_dir.config().display().to_string(),
                message,
            }
        })?;
    Ok((permissions, roots))
}

/// Starts the reaper, the guard of child processes: before anything that
/// starts one exists.
fn start_reaper() -> Arc<Reaper> {
    Arc::new(Reaper::start())
}

/// Makes the runtimes: OpenCode (made, not started: see `start_background`)
/// and the task manager.
fn make_runtimes(
    data_dir: &DataDir,
    config: &Config,
    roots: Vec<PathBuf>,
    store: &Store,
    permissions: &Arc<Permissions>,
    reaper: &Arc<Reaper>,
) -> Result<(Arc<OpenCode>, TaskManager), HostError> {
    let opencode = OpenCode::new(
        config.opencode.clone(),
        roots
            .first()
            .cloned()
            .unwrap_or_else(|| data_dir.root().to_owned()),
        data_dir.root(),
        Arc::clone(reaper),
    );
    let tasks = TaskManager::new(
        store.clone(),
        &config.tasks,
        roots,
        Arc::clone(permissions),
        Arc::clone(&opencode),
        Arc::clone(reaper),
    )?;
    Ok((opencode, tasks))
}

/// Tasks the previous run left unfinished become `interrupted`: no process
/// runs them any more, and no one may see them as running. Before the core
/// exists, so before any connection could list, follow or start a task.
async fn recover_tasks(tasks: &TaskManager) -> Result<(), HostError> {
    let interrupted = tasks.recover().await?;
    if interrupted > 0 {
        tracing::warn!(
            interrupted,
            "tasks left unfinished by the previous run are now marked interrupted"
        );
    }
    Ok(())
}

/// Permission requests the previous run left waiting become `expired`:
/// after `recover_tasks`, as the tasks that asked are interrupted and wait
/// for no answer; before any connection, so that no one can answer them.
async fn expire_unanswered_requests(permissions: &Permissions) -> Result<(), HostError> {
    permissions.expire_unanswered().await?;
    Ok(())
}

/// Loads the counters as stored: uptime and totals go on from there.
async fn load_metrics(store: &Store, config: &Config) -> Result<Metrics, HostError> {
    Ok(Metrics::load(store.clone(), config.metrics.telemetry).await?)
}

/// What the steps before `assemble_core` made.
struct Parts {
    data_dir: DataDir,
    config: Config,
    host_name: String,
    identity: Identity,
    store: Store,
    permissions: Arc<Permissions>,
    reaper: Arc<Reaper>,
    opencode: Arc<OpenCode>,
    tasks: TaskManager,
    metrics: Metrics,
}

/// Assembles the core from the parts, with what needs nothing stored:
/// devices, pairing (closed), discovery (off until `Host::advertise`), the
/// connection budget and the method table.
fn assemble_core(parts: Parts) -> Arc<HostCore> {
    let config = &parts.config;
    let devices = Devices::new(parts.store.clone());
    let pairing = Pairing::new(
        config.pairing.clone(),
        devices.clone(),
        HostFacts {
            host_id: parts.identity.host_id.clone(),
            host_name: parts.host_name.clone(),
            fingerprint: parts.identity.fingerprint.clone(),
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
    Arc::new(HostCore {
        discovery,
        config: parts.config,
        data_dir: parts.data_dir,
        identity: parts.identity,
        host_name: parts.host_name,
        store: parts.store,
        tasks: parts.tasks,
        metrics: parts.metrics,
        devices,
        pairing,
        permissions: parts.permissions,
        opencode: parts.opencode,
        reaper: parts.reaper,
        methods: methods::table(),
        shutdown: CancellationToken::new(),
        admissions,
        reply_sizes: ReplySizes::default(),
        started: Instant::now(),
        started_at_ms: clock::now_ms(),
        connections: Default::default(),
        listeners: Default::default(),
        probe: Default::default(),
    })
}

/// Starts the background work, which uses the core (so last): metrics
/// saved every few seconds, and OpenCode's supervisor (when OpenCode is on).
fn start_background(core: &Arc<HostCore>) -> TaskTracker {
    let background = TaskTracker::new();
    background.spawn(flush_metrics(Arc::clone(core)));
    core.opencode.start(core.shutdown.clone(), &background);
    background
}

/// Shutdown, step by step: `ShutdownStep::ORDER` is the order `Host::shutdown` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShutdownStep {
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
    pub(crate) const ORDER: [ShutdownStep; 8] = [
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
                if let Some(path) = host.socket.lock().take() {
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
