//! The host: opens the data dir and everything in it, serves connections on
//! the transports it is given, and shuts all of it down in order.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Principal, Scope};
use crate::clock;
use crate::config::{Config, ConfigError};
use crate::datadir::{DataDir, DataDirError, DataDirLock};
use crate::devices::Devices;
use crate::discovery::{Advertisement, Discovery};
use crate::health::{self, ListenerState};
use crate::identity::{Identity, IdentityError};
use crate::metrics::{self, Metrics};
use crate::pairing::{Endpoint, HostFacts, Pairing};
use crate::permissions::Permissions;
use crate::protocol::{
    ConnectionCounts, DeviceAuth, HealthCheck, HealthReport, Listener, MetricsReport,
    OpencodeCapability, PairingHealth, RuntimeHealth,
};
use crate::rpc::methods::{self, CallContext};
use crate::rpc::{ErrorCode, MethodTable, RpcError};
use crate::runtime::opencode::{OpenCode, RuntimeState, access};
use crate::session::admission::{AdmissionLimits, Admissions};
use crate::session::budget::ReplySizes;
use crate::session::deadline::Deadlines;
use crate::session::{self, Session, SessionEnd, SessionOptions};
use crate::store::{Store, StoreError};
use crate::tasks::reaper::Reaper;
use crate::tasks::{TaskError, TaskManager};
use crate::transport::{self, FrameReader, FrameWriter, Framing, FramingMode, http, tls, unix};

/// How often local metrics are written to the store.
const METRICS_FLUSH: Duration = Duration::from_secs(5);
/// How long shutdown waits for connections to say goodbye.
const CONNECTIONS_GRACE: Duration = Duration::from_secs(10);
/// How long a store probe's verdict is reused, so that callers of `health.get`
/// (anyone may call it) cannot turn it into a stream of writes.
const PROBE_REUSE: Duration = Duration::from_secs(5);
/// How long the store probe may take before the store counts as stalled.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the owner's certificate files are checked for a renewal.
const CERTIFICATE_POLL: Duration = Duration::from_secs(2);
const DAY: Duration = Duration::from_secs(24 * 3600);

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
    #[error("{path}: {message}")]
    Policy { path: String, message: String },
    #[error(transparent)]
    Unix(#[from] unix::UnixError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(
        "cannot listen on {address}: {source}; pass another --listen ADDR:PORT, or --listen none"
    )]
    Listen {
        address: String,
        source: std::io::Error,
    },
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
    pub devices: Devices,
    pub pairing: Arc<Pairing>,
    /// The LAN advertiser (off until `Host::advertise`).
    pub discovery: Arc<Discovery>,
    pub permissions: Arc<Permissions>,
    pub opencode: Arc<OpenCode>,
    reaper: Arc<Reaper>,
    pub methods: MethodTable<CallContext>,
    /// Cancelled when the host begins to shut down.
    pub shutdown: CancellationToken,
    /// The network connection budget (authenticated and not).
    pub admissions: Arc<Admissions>,
    /// The largest reply each method has produced, for the reply budgets.
    pub reply_sizes: ReplySizes,
    started: Instant,
    started_at_ms: i64,
    sessions: Mutex<HashMap<u64, Weak<Session>>>,
    /// Devices revoked since the host started, checked once more after a
    /// connection takes a device's identity (see `admit`).
    revoked: Mutex<HashSet<String>>,
    next_session: AtomicU64,
    listeners: Mutex<Vec<Bound>>,
    /// Whether a network (TLS) listener was asked for.
    network: AtomicBool,
    /// The last store probe: when, and how it went.
    probe: tokio::sync::Mutex<Option<(Instant, Result<Duration, String>)>>,
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
        self.pairing.connection_closed(session.id);
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

    /// Authenticates a connection: checks the device credential, then gives
    /// the connection that device's identity (see `admit`).
    pub async fn authenticate_session(
        &self,
        session: &Session,
        auth: &DeviceAuth,
    ) -> Result<Principal, RpcError> {
        let principal = if auth.token.is_some() {
            self.authenticate(auth, &session.peer).await?
        } else {
            self.authenticate_browser(session, auth).await?
        };
        self.admit(session, principal)
    }

    /// Gives a connection the principal its credential proved, unless the
    /// device was revoked since the credential was checked.
    ///
    /// A revoke cuts off the connections that have the device's identity.
    /// One that checked the credential just before the revoke, and takes the
    /// identity just after the revoke looked, would escape it; so the
    /// identity is taken first and the revocation checked after. Either the
    /// revoke saw the connection, or this sees the revoke.
    pub fn admit(&self, session: &Session, principal: Principal) -> Result<Principal, RpcError> {
        session.set_principal(principal.clone());
        if let Principal::Device { id, .. } = &principal
            && self.lock_revoked().contains(id)
        {
            session.set_principal(Principal::Anonymous);
            self.metrics.auth_failure(&session.peer, id);
            tracing::warn!(peer = %session.peer, device = %id, "authentication raced a revocation; refused");
            return Err(unknown_device());
        }
        Ok(principal)
    }

    /// Revokes a device: its token never works again and every connection
    /// it has is cut off before this returns. `None` if there is no such device.
    pub async fn revoke_device(
        &self,
        device_id: &str,
    ) -> Result<Option<(crate::devices::Device, u32)>, StoreError> {
        let Some(device) = self.devices.revoke(device_id).await? else {
            return Ok(None);
        };
        // Recorded before the sweep: `admit` relies on this order.
        self.lock_revoked().insert(device.id.clone());
        let closed = self.cut_off_device(&device.id, "this device's pairing was revoked");
        Ok(Some((device, closed)))
    }

    fn lock_revoked(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.revoked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks a device credential.
    pub async fn authenticate(&self, auth: &DeviceAuth, peer: &str) -> Result<Principal, RpcError> {
        let token = auth.token.as_deref().unwrap_or_default();
        let found = if auth.token.is_some() {
            self.devices
                .authenticate(&auth.device_id, token, peer)
                .await?
        } else {
            None
        };
        self.authenticated(auth, found, peer)
    }

    /// Checks a browser's signed credential: the signature must cover this
    /// host, the connection's origin and the nonce it was just given.
    pub async fn authenticate_browser(
        &self,
        session: &Session,
        auth: &DeviceAuth,
    ) -> Result<Principal, RpcError> {
        let (Some(origin), Some(nonce), Some(signature)) =
            (session.origin(), &auth.nonce, &auth.signature)
        else {
            return self.authenticated(auth, None, &session.peer);
        };
        // Used up whether or not the signature is right: one try per nonce.
        let fresh = session.take_challenge(nonce);
        let message = crate::auth::browser_auth_message(
            &self.identity.host_id,
            origin,
            nonce,
            &auth.device_id,
        );
        let found = if fresh {
            self.devices
                .authenticate_signed(&auth.device_id, &session.peer, |key| {
                    crate::auth::verify_browser_signature(key, message.as_bytes(), signature)
                })
                .await?
        } else {
            None
        };
        self.authenticated(auth, found, &session.peer)
    }

    fn authenticated(
        &self,
        auth: &DeviceAuth,
        found: Option<crate::devices::Device>,
        peer: &str,
    ) -> Result<Principal, RpcError> {
        match found {
            Some(device) => Ok(Principal::Device {
                id: device.id,
                name: device.name,
                scopes: device.scopes,
            }),
            None => {
                self.metrics.auth_failure(peer, &auth.device_id);
                tracing::warn!(peer, device = %auth.device_id, "authentication failed");
                Err(unknown_device())
            }
        }
    }

    /// Whether `principal` may act as the host's owner (devices, pairing).
    pub fn owner_may_act(&self, principal: &Principal) -> bool {
        match principal {
            Principal::Local => true,
            Principal::Device { id, scopes, .. } => {
                (self.config.devices.remote_admin || crate::devices::is_console(id))
                    && scopes.contains(&Scope::Admin)
            }
            Principal::Anonymous => false,
        }
    }

    fn live_sessions(&self) -> Vec<Arc<Session>> {
        self.lock_sessions()
            .values()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// Connections a device has open now.
    pub fn device_connections(&self, device_id: &str) -> u32 {
        self.live_sessions()
            .iter()
            .filter(|s| matches!(s.principal(), Principal::Device { id, .. } if id == device_id))
            .count() as u32
    }

    /// Cuts off every connection of a device at once; returns how many.
    fn cut_off_device(&self, device_id: &str, reason: &str) -> u32 {
        let mut closed = 0;
        for session in self.live_sessions() {
            if matches!(session.principal(), Principal::Device { id, .. } if id == device_id) {
                session.cut_off(reason);
                closed += 1;
            }
        }
        closed
    }

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

    fn lock_listeners(&self) -> std::sync::MutexGuard<'_, Vec<Bound>> {
        self.listeners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the host listens.
    pub fn listeners(&self) -> Vec<Listener> {
        self.lock_listeners()
            .iter()
            .map(|b| b.listener.clone())
            .collect()
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

    /// Writes to the store (reusing a recent verdict); how long it took, or why it failed.
    async fn probe_store(&self) -> Result<Duration, String> {
        let mut last = self.probe.lock().await;
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
        let listeners: Vec<ListenerState> = self
            .lock_listeners()
            .iter()
            .map(|b| ListenerState {
                transport: b.listener.transport.clone(),
                address: b.listener.address.clone(),
                accepting: b.accepting.load(Ordering::Relaxed),
            })
            .collect();
        vec![
            health::store(&self.data_dir.database(), &probe),
            health::disk(self.data_dir.root(), self.config.health.min_free_mb),
            health::listeners(&listeners, self.network.load(Ordering::Relaxed)),
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
        let roots = crate::tasks::canonical_roots(&config.tasks);
        let permissions =
            Permissions::new(store.clone(), &config.permissions, &roots).map_err(|message| {
                HostError::Policy {
                    path: data_dir.config().display().to_string(),
                    message,
                }
            })?;
        let reaper = Arc::new(Reaper::start());
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
        let interrupted = tasks.recover().await?;
        if interrupted > 0 {
            tracing::warn!(
                interrupted,
                "tasks left unfinished by the previous run are now marked interrupted"
            );
        }
        permissions.expire_unanswered().await?;
        let metrics = Metrics::load(store.clone(), config.metrics.telemetry).await?;
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
            sessions: Mutex::new(HashMap::new()),
            revoked: Mutex::new(HashSet::new()),
            next_session: AtomicU64::new(0),
            listeners: Mutex::new(Vec::new()),
            network: AtomicBool::new(false),
            probe: tokio::sync::Mutex::new(None),
        });
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

    /// The shared state, for embedding and tests.
    pub fn core(&self) -> &Arc<HostCore> {
        &self.core
    }

    /// Listens on the owner-only unix socket in the data dir.
    pub fn serve_unix(&self) -> Result<(), HostError> {
        let path = self.core.data_dir.socket();
        let listener = unix::bind(&path)?;
        *self.socket.lock().unwrap_or_else(|p| p.into_inner()) = Some(path.clone());
        let accepting = self.core.add_listener("unix", path.display().to_string());
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
            let accepting = self.core.add_listener("tls", local.to_string());
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
        self.core.reaper.stop();
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
        connections.spawn(session::run(
            Arc::clone(&core),
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

/// The answer to a credential that does not (or no longer) work.
fn unknown_device() -> RpcError {
    RpcError::new(
        ErrorCode::UNAUTHORIZED,
        "this device is not paired with the host, or its pairing was revoked",
    )
    .with_action(
        "pair this device again (`openwork-host pair` on the host, then `openwork-host client pair`)",
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn open_host(dir: &std::path::Path) -> Host {
        let (data, work) = (dir.join("data"), dir.join("work"));
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        std::fs::write(
            data.join("config.toml"),
            format!(
                "[tasks]\nworkspace_roots = [{:?}]\n[opencode]\nenabled = \"off\"\n",
                work.display().to_string()
            ),
        )
        .unwrap();
        Host::open(DataDir::resolve(Some(data)).unwrap(), None)
            .await
            .unwrap()
    }

    fn network_session(core: &HostCore) -> Arc<Session> {
        let opts = SessionOptions {
            principal: Principal::Anonymous,
            transport: "tls",
            drain_on_eof: false,
            channel_binding: None,
            peer: "192.0.2.7:50000".into(),
            admission: None,
            deadlines: None,
            origin: None,
        };
        let (session, _outbound) = Session::new(core, &opts);
        core.session_opened(&session);
        session
    }

    #[tokio::test]
    async fn a_connection_authenticating_while_its_device_is_revoked_is_refused_or_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let host = open_host(dir.path()).await;
        let core = Arc::clone(host.core());
        let create = |name: &'static str| {
            let core = Arc::clone(&core);
            async move {
                let (device, token) = core
                    .devices
                    .create(name, &[Scope::TasksRead], "192.0.2.7")
                    .await
                    .unwrap();
                let auth = DeviceAuth {
                    device_id: device.id.clone(),
                    token: Some(token),
                    nonce: None,
                    signature: None,
                };
                (device.id, auth)
            }
        };

        // The interleaving that used to leave a revoked device connected:
        // the credential checks out…
        let (id, auth) = create("phone").await;
        let session = network_session(&core);
        let principal = core.authenticate(&auth, &session.peer).await.unwrap();
        // …the device is revoked, and the revoke finds no connection of it yet…
        let (_, closed) = core.revoke_device(&id).await.unwrap().unwrap();
        assert_eq!(closed, 0);
        // …and only then does the connection take the device's identity.
        let err = core.admit(&session, principal).unwrap_err();
        assert_eq!(err.code, ErrorCode::UNAUTHORIZED);
        assert_eq!(session.principal(), Principal::Anonymous);
        assert_eq!(core.device_connections(&id), 0);

        // The other order: admitted, then revoked: the revoke cuts it off.
        let (id, auth) = create("tablet").await;
        let session = network_session(&core);
        core.authenticate_session(&session, &auth).await.unwrap();
        assert_eq!(core.device_connections(&id), 1);
        let (_, closed) = core.revoke_device(&id).await.unwrap().unwrap();
        assert_eq!(closed, 1);
        assert!(session.is_closing());
        assert_eq!(session.principal(), Principal::Anonymous);
        assert!(
            core.authenticate_session(&network_session(&core), &auth)
                .await
                .is_err(),
            "the token never works again"
        );
        host.shutdown().await;
    }
}
