//! The OpenCode runtime: a supervised `opencode serve` (or an existing server
//! by URL), its event stream routed to the tasks that wait on each session,
//! and its whole API by operation id.
//!
//! The host starts OpenCode on a loopback port with a random password of its
//! own, waits until it answers, reads its OpenAPI document, and consumes its
//! global event stream once. When OpenCode dies, the tasks it was running
//! fail with a clear error and it is restarted with backoff.

pub(crate) mod access;
pub(crate) mod api;
mod orphans;
pub(crate) mod rules;
mod sse;
pub(crate) mod task;

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use futures::StreamExt;
use rand::RngCore;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::execution::reaper::Reaper;
pub(crate) use api::{ApiClient, ApiError, Operations};

/// Whether to run OpenCode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Enabled {
    /// Start it when the `opencode` program is found (or `url` is set).
    Auto,
    /// Start it; a missing program shows as a failing check.
    On,
    Off,
}

/// `[opencode]` in config.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpencodeConfig {
    pub enabled: Enabled,
    /// The `opencode` program (default: found on PATH).
    pub binary: Option<PathBuf>,
    /// Use a running server (`http://127.0.0.1:4096`) instead of starting one.
    pub url: Option<String>,
    pub username: String,
    /// The running server's password (`OPENCODE_SERVER_PASSWORD`), if it has one.
    pub password: Option<String>,
    /// Extra environment for the server the host starts.
    pub env: BTreeMap<String, String>,
    /// How long OpenCode may take to start answering.
    pub startup_timeout_s: u64,
}

impl Default for OpencodeConfig {
    fn default() -> Self {
        Self {
            enabled: Enabled::Auto,
            binary: None,
            url: None,
            username: "opencode".to_owned(),
            password: None,
            env: BTreeMap::new(),
            startup_timeout_s: 60,
        }
    }
}

/// How to install OpenCode, for messages.
pub(crate) const INSTALL_ACTION: &str = "install OpenCode (`npm install -g opencode-ai`), or set [opencode] binary or url in config.toml, then restart the host";

/// Where OpenCode is in its life.
#[derive(Debug, Clone)]
pub(crate) enum RuntimeState {
    /// Turned off in config.
    Off,
    /// No program to run.
    NotInstalled {
        looked_for: String,
    },
    Starting,
    Ready {
        version: String,
        client: ApiClient,
        operations: Arc<Operations>,
    },
    /// It stopped or could not start; it is tried again.
    Restarting {
        attempt: u32,
        reason: String,
    },
    /// The host is shutting down.
    Stopped,
}

impl RuntimeState {
    /// A short name: off, not_installed, starting, ready, restarting, stopped.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            RuntimeState::Off => "off",
            RuntimeState::NotInstalled { .. } => "not_installed",
            RuntimeState::Starting => "starting",
            RuntimeState::Ready { .. } => "ready",
            RuntimeState::Restarting { .. } => "restarting",
            RuntimeState::Stopped => "stopped",
        }
    }
}

/// Why OpenCode cannot be used now.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unavailable {
    #[error("the OpenCode runtime is turned off on this host")]
    Off,
    #[error("OpenCode is not installed on this host (looked for {0})")]
    NotInstalled(String),
    #[error("OpenCode is not ready ({0})")]
    NotReady(String),
}

impl Unavailable {
    /// What the user can do.
    pub fn action(&self) -> &'static str {
        match self {
            Unavailable::Off => {
                "set [opencode] enabled = \"auto\" in config.toml and restart the host"
            }
            Unavailable::NotInstalled(_) => INSTALL_ACTION,
            Unavailable::NotReady(_) => {
                "wait a moment and try again; `openwork-host status` shows OpenCode's state"
            }
        }
    }
}

/// What a task waiting on a session hears.
#[derive(Debug, Clone)]
pub(crate) enum Routed {
    /// An event of the session (or of one of its sub-agent sessions): `{type, properties}`.
    Event(Value),
    /// OpenCode stopped; the session's work is lost.
    Lost(String),
    /// Events may have been missed (the task fell behind, or the event
    /// stream was reconnected): the task must look at OpenCode's state.
    Resync,
}

/// Events queued per task before it counts as behind (then it resyncs).
const ROUTE_QUEUE: usize = 1024;

/// One task's route: its queue of events, and the signals that must never
/// be lost even when the queue is full.
struct Route {
    events: mpsc::Sender<Value>,
    missed: AtomicBool,
    lost: Mutex<Option<String>>,
    wake: Notify,
    /// The task's session and the sub-agent sessions started from it.
    sessions: Mutex<Vec<String>>,
}

impl Route {
    fn deliver(&self, event: Value) {
        if self.events.try_send(event).is_err() {
            self.resync();
        }
    }

    fn resync(&self) {
        self.missed.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    fn lose(&self, reason: &str) {
        self.lost.lock().get_or_insert_with(|| reason.to_owned());
        self.wake.notify_one();
    }
}

/// A session that already has a task of this host working on it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("OpenCode session `{0}` is already in use by a task of this host")]
pub struct SessionInUse(pub String);

enum Source {
    Managed(PathBuf),
    External {
        url: String,
        auth: Option<(String, String)>,
    },
}

/// The OpenCode runtime for the whole host.
pub(crate) struct OpenCode {
    config: OpencodeConfig,
    source: Option<Source>,
    directory: PathBuf,
    log_path: PathBuf,
    state: watch::Sender<RuntimeState>,
    routes: Mutex<HashMap<String, Arc<Route>>>,
    reaper: Arc<Reaper>,
}

/// Where OpenCode would come from, as config.toml and PATH say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Located {
    /// `enabled = "off"`.
    Off,
    /// A running server to use.
    Url(String),
    /// The program to start.
    Program(PathBuf),
    /// Nothing to run.
    Missing { looked_for: String },
}

/// Finds OpenCode without starting it (also used by `doctor` while the host is down).
pub(crate) fn locate(config: &OpencodeConfig) -> Located {
    match (&config.enabled, &config.url, &config.binary) {
        (Enabled::Off, _, _) => Located::Off,
        (_, Some(url), _) => Located::Url(url.clone()),
        (_, None, Some(binary)) if binary.is_file() => Located::Program(binary.clone()),
        (_, None, Some(binary)) => Located::Missing {
            looked_for: binary.display().to_string(),
        },
        (_, None, None) => match which("opencode") {
            Some(binary) => Located::Program(binary),
            None => Located::Missing {
                looked_for: "`opencode` on PATH".to_owned(),
            },
        },
    }
}

/// Finds a program on PATH.
fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

impl OpenCode {
    /// Sets the runtime up from config; `start` runs it.
    pub(crate) fn new(
        config: OpencodeConfig,
        directory: PathBuf,
        data_dir: &Path,
        reaper: Arc<Reaper>,
    ) -> Arc<OpenCode> {
        let (source, state) = match locate(&config) {
            Located::Off => (None, RuntimeState::Off),
            Located::Url(url) => (
                Some(Source::External {
                    url,
                    auth: config
                        .password
                        .clone()
                        .map(|p| (config.username.clone(), p)),
                }),
                RuntimeState::Starting,
            ),
            Located::Program(binary) => (Some(Source::Managed(binary)), RuntimeState::Starting),
            Located::Missing { looked_for } => (None, RuntimeState::NotInstalled { looked_for }),
        };
        Arc::new(OpenCode {
            config,
            source,
            directory,
            log_path: data_dir.join("opencode.log"),
            state: watch::Sender::new(state),
            routes: Mutex::new(HashMap::new()),
            reaper,
        })
    }

    /// Runs the supervisor until `shutdown`.
    pub(crate) fn start(
        self: &Arc<Self>,
        shutdown: CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
    ) {
        if self.source.is_some() {
            tracker.spawn(Arc::clone(self).supervise(shutdown));
        }
    }

    /// A failed call to OpenCode as a JSON-RPC error, with what to do about
    /// it on this host (OpenCode's own message is kept).
    pub(crate) fn rpc_error(&self, e: ApiError) -> crate::rpc::RpcError {
        let status = e.status();
        let error = crate::rpc::RpcError::from(e);
        let external = match &self.source {
            Some(Source::External { url, .. }) => Some(url.as_str()),
            _ => None,
        };
        let log = self.log_path.display();
        match (status, external) {
            (Some(401 | 403), Some(url)) => error.with_action(format!(
                "the OpenCode server at {url} refused the host's credentials: set [opencode] username and password in config.toml to its OPENCODE_SERVER_USERNAME and OPENCODE_SERVER_PASSWORD, then restart the host"
            )),
            (Some(401 | 403), None) => error.with_action(format!(
                "OpenCode refused the password the host gave it; restart the host (it starts OpenCode with a new one), and see {log} if it happens again"
            )),
            (Some(500..), Some(url)) => error.with_action(format!(
                "OpenCode failed on this call (its message is above); see the log of the OpenCode server at {url}"
            )),
            (Some(500..), None) => error.with_action(format!(
                "OpenCode failed on this call (its message is above); see {log}"
            )),
            _ => error,
        }
    }

    /// The current state.
    pub(crate) fn state(&self) -> RuntimeState {
        self.state.borrow().clone()
    }

    /// Whether the runtime is meant to run (it may still be starting).
    pub(crate) fn configured(&self) -> Result<(), Unavailable> {
        match &*self.state.borrow() {
            RuntimeState::Off => Err(Unavailable::Off),
            RuntimeState::NotInstalled { looked_for } => {
                Err(Unavailable::NotInstalled(looked_for.clone()))
            }
            _ => Ok(()),
        }
    }

    /// The client and operations once ready, waiting up to `wait`.
    pub(crate) async fn ready(
        &self,
        wait: Duration,
    ) -> Result<(ApiClient, Arc<Operations>), Unavailable> {
        self.configured()?;
        let mut rx = self.state.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let RuntimeState::Ready {
                client, operations, ..
            } = &*rx.borrow_and_update()
            {
                return Ok((client.clone(), Arc::clone(operations)));
            }
            let now = rx.borrow().clone();
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => {
                    return Err(match now {
                        RuntimeState::Restarting { reason, .. } => {
                            Unavailable::NotReady(format!("restarting after: {reason}"))
                        }
                        other => Unavailable::NotReady(other.name().to_owned()),
                    });
                }
            }
        }
    }

    /// Claims `session_id` for one task: its events (and those of the
    /// sub-agent sessions it starts) go to the returned receiver until it is
    /// dropped. A session has one task at a time.
    pub(crate) fn route(self: &Arc<Self>, session_id: &str) -> Result<SessionEvents, SessionInUse> {
        let (tx, rx) = mpsc::channel(ROUTE_QUEUE);
        let route = Arc::new(Route {
            events: tx,
            missed: AtomicBool::new(false),
            lost: Mutex::new(None),
            wake: Notify::new(),
            sessions: Mutex::new(vec![session_id.to_owned()]),
        });
        let mut routes = self.routes.lock();
        if routes.contains_key(session_id) {
            return Err(SessionInUse(session_id.to_owned()));
        }
        routes.insert(session_id.to_owned(), Arc::clone(&route));
        Ok(SessionEvents {
            rx,
            route,
            owner: Arc::clone(self),
        })
    }

    fn deliver(&self, session_id: &str, event: Value) {
        let route = self.routes.lock().get(session_id).cloned();
        if let Some(route) = route {
            route.deliver(event);
        }
    }

    /// A sub-agent session started from a routed one joins its route, so
    /// that its events and permission asks reach the same task.
    fn adopt(&self, child: &str, parent: &str) {
        let mut routes = self.routes.lock();
        if routes.contains_key(child) {
            return;
        }
        if let Some(route) = routes.get(parent).cloned() {
            route.sessions.lock().push(child.to_owned());
            routes.insert(child.to_owned(), route);
        }
    }

    fn routes(&self) -> Vec<Arc<Route>> {
        let mut all: Vec<Arc<Route>> = self.routes.lock().values().cloned().collect();
        all.sort_by_key(|r| Arc::as_ptr(r) as usize);
        all.dedup_by_key(|r| Arc::as_ptr(r) as usize);
        all
    }

    async fn supervise(self: Arc<Self>, shutdown: CancellationToken) {
        let mut attempt = 0u32;
        loop {
            let started = Instant::now();
            let reason = match &self.source {
                Some(Source::Managed(binary)) => self.run_managed(binary, &shutdown).await,
                Some(Source::External { url, auth }) => {
                    self.run_external(url, auth.clone(), &shutdown).await
                }
                None => return,
            };
            // On shutdown the tasks stop by themselves, as interrupted.
            if shutdown.is_cancelled() {
                break;
            }
            // A run that lasted a while resets the backoff.
            attempt = if started.elapsed() > Duration::from_secs(60) {
                1
            } else {
                attempt + 1
            };
            let wait = Duration::from_secs((1u64 << attempt.min(5)).min(30));
            tracing::warn!(%reason, attempt, retry_in_s = wait.as_secs(), "OpenCode stopped; restarting it");
            // The state first, so that a task failing on this sees it too.
            self.state.send_replace(RuntimeState::Restarting {
                attempt,
                reason: reason.clone(),
            });
            for route in self.routes() {
                route.lose(&reason);
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        self.state.send_replace(RuntimeState::Stopped);
    }

    /// Starts `opencode serve`, serves until it exits; returns why it stopped.
    async fn run_managed(&self, binary: &Path, shutdown: &CancellationToken) -> String {
        let port = match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
            Ok(address) => address.port(),
            Err(e) => return format!("no free port for OpenCode: {e}"),
        };
        let mut secret = [0u8; 24];
        rand::rng().fill_bytes(&mut secret);
        let password = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        // Unique to this run, so that only its own leftovers are stopped.
        let run_marker = format!("{:016x}", rand::random::<u64>());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path);
        let (stdout, stderr) = match log.and_then(|f| Ok((f.try_clone()?, f))) {
            Ok((a, b)) => (std::process::Stdio::from(a), std::process::Stdio::from(b)),
            Err(_) => (std::process::Stdio::null(), std::process::Stdio::null()),
        };
        self.state.send_replace(RuntimeState::Starting);
        let mut command = tokio::process::Command::new(binary);
        command
            .args([
                "serve",
                "--hostname",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .current_dir(&self.directory)
            .env("OPENCODE_SERVER_PASSWORD", &password)
            .env("OPENCODE_SERVER_USERNAME", &self.config.username)
            .env(orphans::MARKER_VAR, &run_marker)
            .envs(&self.config.env)
            .stdin(std::process::Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => return format!("cannot start {}: {e}", binary.display()),
        };
        let pgid = child.id().map(|p| p as i32);
        if let Some(pgid) = pgid {
            self.reaper.watch(pgid);
        }
        let client = match ApiClient::new(
            &format!("http://127.0.0.1:{port}"),
            Some((self.config.username.clone(), password)),
        ) {
            Ok(client) => client,
            Err(e) => return e.to_string(),
        };
        let reason = tokio::select! {
            status = child.wait() => format!("OpenCode exited ({})", status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())),
            reason = self.serve(client, shutdown) => reason,
        };
        if let Some(pgid) = pgid {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGTERM,
            );
            if tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
            {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pgid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = child.wait().await;
            }
            self.reaper.forget(pgid);
        }
        // Scanning /proc is blocking work.
        let orphans = tokio::task::spawn_blocking(move || orphans::stop_marked(&run_marker))
            .await
            .unwrap_or(0);
        if orphans > 0 {
            tracing::info!(
                orphans,
                "stopped tool processes the OpenCode server left behind"
            );
        }
        reason
    }

    async fn run_external(
        &self,
        url: &str,
        auth: Option<(String, String)>,
        shutdown: &CancellationToken,
    ) -> String {
        self.state.send_replace(RuntimeState::Starting);
        match ApiClient::new(url, auth) {
            Ok(client) => self.serve(client, shutdown).await,
            Err(e) => e.to_string(),
        }
    }

    /// Waits for the server, reads its API, then follows its events until
    /// the server or the host goes away.
    async fn serve(&self, client: ApiClient, shutdown: &CancellationToken) -> String {
        let startup = Duration::from_secs(self.config.startup_timeout_s);
        let deadline = tokio::time::Instant::now() + startup;
        // Short probes: a server still starting may take a connection and
        // never answer it, and a long wait on that one delays everything.
        let probe = |path: &'static str, wait: u64| {
            client.send(
                reqwest::Method::GET,
                path,
                &[],
                None,
                Duration::from_secs(wait),
            )
        };
        let version = loop {
            match probe("/global/health", 2).await {
                Ok(health) if health["healthy"] == Value::Bool(true) => {
                    break health["version"].as_str().unwrap_or("unknown").to_owned();
                }
                Err(ApiError::Status { status: 401, .. }) => {
                    return "OpenCode refused the host's credentials (401)".to_owned();
                }
                _ if tokio::time::Instant::now() > deadline => {
                    return format!("OpenCode did not answer within {} s", startup.as_secs());
                }
                _ => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return "the host is shutting down".to_owned(),
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        };
        let operations = loop {
            match probe("/doc", 10).await {
                Ok(doc) if doc.get("paths").is_some() => break Operations::from_openapi(&doc),
                _ if tokio::time::Instant::now() > deadline => {
                    return format!(
                        "OpenCode's API document was not available within {} s",
                        startup.as_secs()
                    );
                }
                _ => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return "the host is shutting down".to_owned(),
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
            }
        };
        tracing::info!(
            version,
            operations = operations.by_id.len(),
            url = client.base(),
            "OpenCode is ready"
        );
        let (connected_tx, connected_rx) = tokio::sync::oneshot::channel();
        let events = self.follow_events(&client, shutdown, connected_tx);
        let ready = async {
            // Ready only once the event stream is up, so no task misses its events.
            if connected_rx.await.is_ok() {
                self.state.send_replace(RuntimeState::Ready {
                    version,
                    client: client.clone(),
                    operations: Arc::new(operations),
                });
            }
            std::future::pending::<()>().await;
        };
        tokio::select! {
            reason = events => reason,
            _ = ready => unreachable!("pending"),
        }
    }

    /// Follows `/global/event`, reconnecting while the server lives.
    async fn follow_events(
        &self,
        client: &ApiClient,
        shutdown: &CancellationToken,
        connected: tokio::sync::oneshot::Sender<()>,
    ) -> String {
        let mut connected = Some(connected);
        let mut failures = 0;
        loop {
            let response = tokio::select! {
                _ = shutdown.cancelled() => return "the host is shutting down".to_owned(),
                response = client.stream_request("/global/event").send() => response,
            };
            let mut stream = match response {
                Ok(r) if r.status().is_success() => r.bytes_stream(),
                Ok(r) => return format!("OpenCode's event stream answered {}", r.status()),
                Err(e) => {
                    failures += 1;
                    if failures > 5 {
                        return format!("OpenCode's event stream failed: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            if let Some(connected) = connected.take() {
                let _ = connected.send(());
            } else {
                for route in self.routes() {
                    route.resync();
                }
            }
            let mut parser = sse::Parser::default();
            loop {
                let chunk = tokio::select! {
                    _ = shutdown.cancelled() => return "the host is shutting down".to_owned(),
                    chunk = stream.next() => chunk,
                };
                let Some(Ok(bytes)) = chunk else { break };
                failures = 0;
                match parser.feed(&bytes) {
                    Ok(events) => {
                        for event in events {
                            self.dispatch(&event.data);
                        }
                    }
                    Err(e) => {
                        // Read again from a fresh connection (the routes resync).
                        tracing::warn!(error = %e, "OpenCode's event stream cannot be read further; reconnecting");
                        break;
                    }
                }
            }
            tracing::debug!("OpenCode's event stream ended; reconnecting");
            // As the stream asked (`retry`), within reason.
            let pause = parser.retry().unwrap_or(Duration::from_millis(100));
            tokio::time::sleep(pause.min(Duration::from_secs(5))).await;
        }
    }

    fn dispatch(&self, data: &str) {
        let Ok(event) = serde_json::from_str::<Value>(data) else {
            return;
        };
        let payload = event.get("payload").cloned().unwrap_or(event);
        if payload["type"] == "sync" {
            return;
        }
        let session = payload
            .pointer("/properties/sessionID")
            .or_else(|| payload.pointer("/properties/info/sessionID"))
            .or_else(|| payload.pointer("/properties/part/sessionID"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        // A sub-agent's session names the session that started it.
        if matches!(
            payload["type"].as_str(),
            Some("session.created" | "session.updated")
        ) && let (Some(child), Some(parent)) = (
            payload
                .pointer("/properties/info/id")
                .and_then(Value::as_str),
            payload
                .pointer("/properties/info/parentID")
                .and_then(Value::as_str),
        ) {
            self.adopt(child, parent);
        }
        if let Some(session) = session.or_else(|| {
            payload
                .pointer("/properties/info/id")
                .and_then(Value::as_str)
                .map(str::to_owned)
        }) {
            self.deliver(&session, payload);
        }
    }
}

/// A task's claim on one session, and the events of that session and of
/// the sub-agent sessions it starts.
pub(crate) struct SessionEvents {
    rx: mpsc::Receiver<Value>,
    route: Arc<Route>,
    owner: Arc<OpenCode>,
}

impl SessionEvents {
    /// The next thing the task must handle. Queued events come first, then
    /// a resync when some were missed; OpenCode stopping comes before all.
    pub(crate) async fn next(&mut self) -> Routed {
        loop {
            if let Some(reason) = self.route.lost.lock().take() {
                return Routed::Lost(reason);
            }
            if let Ok(event) = self.rx.try_recv() {
                return Routed::Event(event);
            }
            if self.route.missed.swap(false, Ordering::SeqCst) {
                return Routed::Resync;
            }
            tokio::select! {
                event = self.rx.recv() => if let Some(event) = event {
                    return Routed::Event(event);
                },
                _ = self.route.wake.notified() => {}
            }
        }
    }

    /// Starts afresh before the prompt: what happened to the session before
    /// (another prompt's events, a stop of an earlier OpenCode) is no
    /// concern of the task.
    pub(crate) fn begin(&mut self) {
        self.route.lost.lock().take();
        self.route.missed.store(false, Ordering::SeqCst);
        while self.rx.try_recv().is_ok() {}
    }

    /// The sessions routed here: the task's own first, then its sub-agents'.
    pub(crate) fn sessions(&self) -> Vec<String> {
        self.route.sessions.lock().clone()
    }
}

impl Drop for SessionEvents {
    fn drop(&mut self) {
        let sessions = std::mem::take(&mut *self.route.sessions.lock());
        let mut routes = self.owner.routes.lock();
        for session in sessions {
            if routes
                .get(&session)
                .is_some_and(|r| Arc::ptr_eq(r, &self.route))
            {
                routes.remove(&session);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::ErrorCode;
    use serde_json::json;

    fn refused(status: u16) -> ApiError {
        ApiError::Status {
            status,
            message: "OpenCode says no".into(),
            body: json!({"message": "OpenCode says no"}),
        }
    }

    #[test]
    fn opencodes_refusals_and_failures_say_what_to_do_on_this_host() {
        let dir = tempfile::tempdir().unwrap();
        let reaper = Arc::new(Reaper::start());
        let external = OpenCode::new(
            OpencodeConfig {
                url: Some("http://127.0.0.1:4096".into()),
                ..OpencodeConfig::default()
            },
            dir.path().to_owned(),
            dir.path(),
            Arc::clone(&reaper),
        );
        let e = external.rpc_error(refused(401));
        assert_eq!(e.code, ErrorCode::RUNTIME_UNAVAILABLE);
        let action = e.action().unwrap();
        assert!(
            action.contains("http://127.0.0.1:4096") && action.contains("password"),
            "{action}"
        );
        let e = external.rpc_error(refused(500));
        assert_eq!(e.code, ErrorCode::INTERNAL_ERROR);
        assert!(e.message.contains("OpenCode says no"), "{}", e.message);
        assert!(e.action().unwrap().contains("http://127.0.0.1:4096"));
        let e = external.rpc_error(refused(404));
        assert_eq!(e.code, ErrorCode::NOT_FOUND);
        assert!(e.action().is_none());

        let managed = OpenCode::new(
            OpencodeConfig {
                binary: Some("/bin/sh".into()),
                ..OpencodeConfig::default()
            },
            dir.path().to_owned(),
            dir.path(),
            reaper,
        );
        let e = managed.rpc_error(refused(502));
        let log = dir.path().join("opencode.log").display().to_string();
        assert!(e.action().unwrap().contains(&log), "{e:?}");
        let e = managed.rpc_error(refused(401));
        assert_eq!(e.code, ErrorCode::RUNTIME_UNAVAILABLE);
        assert!(e.action().unwrap().contains("restart the host"), "{e:?}");
    }

    fn off() -> (Arc<OpenCode>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let opencode = OpenCode::new(
            OpencodeConfig {
                enabled: Enabled::Off,
                ..OpencodeConfig::default()
            },
            dir.path().to_owned(),
            dir.path(),
            Arc::new(Reaper::start()),
        );
        (opencode, dir)
    }

    fn event(session: &str, n: usize) -> String {
        json!({"type": "message.part.delta", "properties": {"sessionID": session, "n": n}})
            .to_string()
    }

    #[tokio::test]
    async fn a_task_that_falls_behind_is_told_to_resync_and_a_stop_is_never_lost() {
        let (opencode, _dir) = off();
        let mut events = opencode.route("ses_a").unwrap();
        for n in 0..ROUTE_QUEUE + 10 {
            opencode.dispatch(&event("ses_a", n));
        }
        opencode.dispatch(&event("ses_other", 0));
        for n in 0..ROUTE_QUEUE {
            match events.next().await {
                Routed::Event(ev) => assert_eq!(ev["properties"]["n"], n),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(events.next().await, Routed::Resync));
        opencode.dispatch(&event("ses_a", 1));
        for route in opencode.routes() {
            route.lose("it died");
        }
        assert!(
            matches!(events.next().await, Routed::Lost(reason) if reason == "it died"),
            "a stop comes before queued events"
        );
    }

    #[tokio::test]
    async fn a_session_has_one_task_and_its_sub_agents_follow_it() {
        let (opencode, _dir) = off();
        let mut events = opencode.route("ses_a").unwrap();
        assert!(opencode.route("ses_a").is_err(), "a second task is refused");
        opencode.dispatch(
            &json!({"type": "session.created", "properties": {"info": {"id": "ses_child", "parentID": "ses_a"}}})
                .to_string(),
        );
        opencode.dispatch(&event("ses_child", 7));
        assert!(
            matches!(events.next().await, Routed::Event(ev) if ev["type"] == "session.created")
        );
        assert!(matches!(events.next().await, Routed::Event(ev) if ev["properties"]["n"] == 7));
        assert_eq!(events.sessions(), ["ses_a", "ses_child"]);
        drop(events);
        assert!(
            opencode.route("ses_a").is_ok(),
            "free again once the task ends"
        );
        assert!(opencode.routes.lock().get("ses_child").is_none());
    }
}
