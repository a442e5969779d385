//! The host: opens the data dir and everything in it, serves connections on
//! the transports it is given, and shuts all of it down in order.
//!
//! `startup` writes down the order of start-up and shutdown; `listeners`
//! owns where the host listens; `auth` who a connection is (and the race
//! with a revocation); `report` the health panel and metrics; `calls` what a
//! connection or a method handler may ask of the host (`rpc::methods::
//! HostCalls` for `HostCore`, all that a method handler knows of the host);
//! `serving` is `session::Serving` for `HostCore`, all that a connection (and
//! the HTTP and WebSocket fronts) know of the host. `HostCore`'s parts are
//! private to this module. The host is the composition
//! root: it names every layer, and no module below it names the host.

mod auth;
mod calls;
mod listeners;
pub use listeners::Mdns;
mod report;
mod serving;
mod startup;

pub(crate) use startup::ShutdownStep;

use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ConfigError};
use crate::datadir::{DataDir, DataDirError, DataDirLock};
use crate::devices::Devices;
use crate::discovery::Discovery;
use crate::identity::{Identity, IdentityError};
use crate::metrics::Metrics;
use crate::pairing::Pairing;
use crate::permissions::Permissions;
use crate::rpc::MethodTable;
use crate::rpc::methods::CallContext;
use crate::runtime::opencode::OpenCode;
use crate::session::admission::Admissions;
use crate::session::budget::ReplySizes;
use crate::session::{self, SessionEnd, SessionOptions};
use crate::store::{Store, StoreError};
use crate::tasks::reaper::Reaper;
use crate::tasks::{TaskError, TaskManager};
use crate::transport::{FrameReader, FrameWriter, tls, unix};

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

/// Everything a connection or handler may use; shared by all of them. Its
/// parts are private: what a connection or handler may do is a method
/// (`calls`, `auth`, `report`).
pub struct HostCore {
    config: Config,
    data_dir: DataDir,
    identity: Identity,
    host_name: String,
    store: Store,
    tasks: TaskManager,
    metrics: Metrics,
    devices: Devices,
    pairing: Arc<Pairing>,
    /// The LAN advertiser (off until `Host::advertise`).
    discovery: Arc<Discovery>,
    permissions: Arc<Permissions>,
    opencode: Arc<OpenCode>,
    reaper: Arc<Reaper>,
    methods: MethodTable<CallContext>,
    /// Cancelled when the host begins to shut down.
    shutdown: CancellationToken,
    /// The network connection budget (authenticated and not).
    admissions: Arc<Admissions>,
    /// The largest reply each method has produced, for the reply budgets.
    reply_sizes: ReplySizes,
    started: Instant,
    started_at_ms: i64,
    /// Open connections, and devices revoked since the start.
    connections: auth::Connections,
    /// Where the host listens.
    listeners: listeners::Listeners,
    /// The last store probe.
    probe: report::StoreProbe,
}

impl HostCore {
    /// Seconds since the host started.
    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
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
    /// Opens the data dir (taking its lock), the store and the task runner,
    /// in the order `startup::open` writes down. `config` overrides the data
    /// dir's config.toml.
    pub async fn open(data_dir: DataDir, config: Option<Config>) -> Result<Host, HostError> {
        startup::open(data_dir, config).await
    }

    /// The shared state, for embedding and tests.
    pub fn core(&self) -> &Arc<HostCore> {
        &self.core
    }

    /// Turns LAN discovery off instead of advertising (`--no-mdns`).
    pub fn turn_off_discovery(&self, reason: &str) {
        self.core.discovery.turn_off(reason);
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
    /// lets connections deliver their last messages, saves metrics, closes
    /// the store; `ShutdownStep::ORDER` is the order, and says why.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        for step in ShutdownStep::ORDER {
            step.run(&self).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Principal, Scope};
    use crate::protocol::DeviceAuth;
    use crate::rpc::ErrorCode;
    use crate::session::Session;

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
