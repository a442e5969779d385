//! The host: opens the data dir and everything in it, serves connections on
//! the transports it is given, and shuts all of it down in order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Principal;
use crate::clock;
use crate::config::{Config, ConfigError};
use crate::datadir::{DataDir, DataDirError, DataDirLock};
use crate::identity::{Identity, IdentityError};
use crate::metrics::{self, Metrics};
use crate::protocol::{ConnectionCounts, DeviceAuth, HealthReport, MetricsReport};
use crate::rpc::methods::{self, CallContext};
use crate::rpc::{ErrorCode, MethodTable, RpcError};
use crate::session::{self, Session, SessionEnd, SessionOptions};
use crate::store::{Store, StoreError};
use crate::tasks::{TaskError, TaskManager};
use crate::transport::{self, FrameReader, FrameWriter, Framing, FramingMode, unix};

/// How often local metrics are written to the store.
const METRICS_FLUSH: Duration = Duration::from_secs(5);
/// How long shutdown waits for connections to say goodbye.
const CONNECTIONS_GRACE: Duration = Duration::from_secs(10);

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tasks(#[from] TaskError),
    #[error(transparent)]
    Unix(#[from] unix::UnixError),
}

/// Everything a connection or handler may use; shared by all of them.
pub struct HostCore {
    pub config: Config,
    pub data_dir: DataDir,
    pub identity: Identity,
    pub host_name: String,
    pub store: Store,
    pub tasks: TaskManager,
    pub metrics: Metrics,
    pub methods: MethodTable<CallContext>,
    /// Cancelled when the host begins to shut down.
    pub shutdown: CancellationToken,
    started: Instant,
    started_at_ms: i64,
    sessions: Mutex<HashMap<u64, Weak<Session>>>,
    next_session: AtomicU64,
}

impl HostCore {
    pub fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn session_opened(&self, session: &Arc<Session>) {
        self.metrics.connection_opened();
        self.lock_sessions()
            .insert(session.id, Arc::downgrade(session));
        tracing::debug!(
            session = session.id,
            transport = session.transport,
            "connection opened"
        );
    }

    pub fn session_closed(&self, session: &Arc<Session>, end: &SessionEnd) {
        self.metrics.connection_closed();
        self.lock_sessions().remove(&session.id);
        tracing::debug!(session = session.id, reason = ?end.reason, "connection closed");
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Weak<Session>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seconds since the host started.
    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Checks a device credential.
    pub async fn authenticate(&self, _auth: &DeviceAuth) -> Result<Principal, RpcError> {
        self.metrics.auth_failure();
        Err(
            RpcError::new(ErrorCode::UNAUTHORIZED, "unknown device or wrong token")
                .with_action("pair this device again with `openwork-host pair` on the host"),
        )
    }

    /// The health panel; `details` adds what needs `tasks.read`.
    pub async fn health(&self, details: bool) -> Result<HealthReport, StoreError> {
        let mut report = HealthReport {
            status: "ok".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            host_id: self.identity.host_id.clone(),
            host_name: self.host_name.clone(),
            uptime_s: self.uptime_s(),
            started_at: clock::rfc3339(self.started_at_ms),
            data_dir: None,
            tasks: None,
            connections: None,
        };
        if details {
            report.data_dir = Some(self.data_dir.root().display().to_string());
            report.tasks = Some(self.tasks.counts().await.map_err(task_store_error)?);
            report.connections = Some(self.metrics.active_connections());
        }
        Ok(report)
    }

    /// The local metrics.
    pub async fn metrics_report(&self) -> Result<MetricsReport, StoreError> {
        Ok(MetricsReport {
            uptime_s: self.uptime_s(),
            connections: ConnectionCounts {
                accepted: self.metrics.get(metrics::CONNECTIONS_ACCEPTED),
                active: self.metrics.active_connections(),
                disconnects: self.metrics.get(metrics::DISCONNECTS),
            },
            tasks: self.tasks.counts().await.map_err(task_store_error)?,
        })
    }
}

fn task_store_error(e: TaskError) -> StoreError {
    match e {
        TaskError::Store(e) => e,
        other => StoreError::Open {
            path: String::new(),
            message: other.to_string(),
        },
    }
}

/// A running host.
pub struct Host {
    core: Arc<HostCore>,
    connections: TaskTracker,
    background: TaskTracker,
    socket: Mutex<Option<std::path::PathBuf>>,
    _lock: DataDirLock,
}

impl Host {
    /// Opens the data dir (taking its lock), the store and the task runner.
    /// `config` overrides the data dir's config.toml.
    pub async fn open(data_dir: DataDir, config: Option<Config>) -> Result<Host, HostError> {
        data_dir.create()?;
        let lock = data_dir.lock()?;
        let config = match config {
            Some(config) => config,
            None => Config::load(&data_dir.config())?,
        };
        let host_name = config.host_name();
        let identity = Identity::load_or_create(&data_dir, &host_name)?;
        let store = Store::open(&data_dir.database())?;
        let tasks = TaskManager::new(store.clone(), &config.tasks)?;
        let interrupted = tasks.recover().await?;
        if interrupted > 0 {
            tracing::warn!(
                interrupted,
                "tasks left unfinished by the previous run are now marked interrupted"
            );
        }
        let metrics = Metrics::load(store.clone()).await?;
        let core = Arc::new(HostCore {
            config,
            data_dir,
            identity,
            host_name,
            store,
            tasks,
            metrics,
            methods: methods::table(),
            shutdown: CancellationToken::new(),
            started: Instant::now(),
            started_at_ms: clock::now_ms(),
            sessions: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(0),
        });
        let background = TaskTracker::new();
        background.spawn(flush_metrics(Arc::clone(&core)));
        Ok(Host {
            core,
            connections: TaskTracker::new(),
            background,
            socket: Mutex::new(None),
            _lock: lock,
        })
    }

    /// The shared state, for embedding and tests.
    pub fn core(&self) -> &Arc<HostCore> {
        &self.core
    }

    /// Listens on the owner-only unix socket in the data dir.
    pub fn serve_unix(&self) -> Result<(), HostError> {
        let path = self.core.data_dir.socket();
        let listener = unix::bind(&path)?;
        *self.socket.lock().unwrap_or_else(|p| p.into_inner()) = Some(path.clone());
        tracing::info!(socket = %path.display(), "listening for local clients");
        let core = Arc::clone(&self.core);
        let connections = self.connections.clone();
        self.background
            .spawn(accept_unix(core, listener, connections));
        Ok(())
    }

    /// Serves one connection on any byte streams until it ends.
    pub async fn serve_connection<R, W>(
        &self,
        reader: FrameReader<R>,
        writer: FrameWriter<W>,
        opts: SessionOptions,
    ) -> SessionEnd
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let core = Arc::clone(&self.core);
        self.connections
            .track_future(session::run(core, reader, writer, opts))
            .await
    }

    /// A token cancelled when shutdown begins.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.core.shutdown.clone()
    }

    /// Shuts down: stops accepting, stops tasks (they become `interrupted`),
    /// lets connections deliver their last messages, saves metrics, closes the store.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        self.core.shutdown.cancel();
        self.core.tasks.shutdown().await;
        self.connections.close();
        if tokio::time::timeout(CONNECTIONS_GRACE, self.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close in time");
        }
        self.background.close();
        self.background.wait().await;
        if let Err(e) = self.core.metrics.flush().await {
            tracing::warn!(error = %e, "could not save metrics");
        }
        self.core.store.close();
        if let Some(path) = self.socket.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = std::fs::remove_file(path);
        }
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
        let opts = SessionOptions {
            principal: Principal::Local,
            transport: "unix",
            drain_on_eof: true,
        };
        connections.spawn(session::run(Arc::clone(&core), reader, writer, opts));
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
