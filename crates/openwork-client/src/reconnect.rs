//! A session with a paired host that outlives its connections: when one
//! drops (network, host restart) it reconnects with exponential backoff and
//! jitter, initializes again, resubscribes every followed task from the last
//! seq it handed out, and hands out each notification once.
//!
//! `task.run` gets an idempotency key unless the caller gave one, and is sent
//! again with the same key after a drop, so a task never starts twice. Other
//! calls are repeated only when repeating cannot change anything (reads,
//! subscriptions); the rest fail with `SessionError::Interrupted`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::io::WriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;

use super::tls::{ConnectError, connect_tls};
use super::{ClientError, Incoming, KnownHost, SessionError};
use crate::protocol::{
    LogChunk, PermissionRequest, PermissionResolved, TaskRunParams, TaskRunResult, TaskStatus,
    TaskSubscribeResult, TaskUpdate,
};
use crate::rpc::RpcError;
use crate::transport::{FrameWriter, ReadEvent};

/// Messages read ahead of the caller, per connection, before reading pauses.
const READ_AHEAD: usize = 256;
/// Finished tasks remembered, so that late copies of their notifications
/// (from a second subscription) are still recognised; older ones are forgotten.
const FINISHED_KEPT: usize = 4096;
/// How long the probe after a network change waits for the host's answer: a
/// live connection answers a ping well within it, even over a slow mobile
/// link; a wrong guess only costs a reconnect, which loses nothing.
pub const NETWORK_CHANGE_PROBE: Duration = Duration::from_millis(500);

/// How to reconnect.
#[derive(Debug, Clone)]
pub struct ReconnectPolicy {
    /// The longest first pause between attempts; each failed attempt doubles it.
    pub first_delay: Duration,
    /// The longest pause between attempts.
    pub max_delay: Duration,
    /// Give up once the host has been unreachable this long.
    pub give_up_after: Duration,
    /// One attempt (TCP, TLS, `initialize`, resubscribing) may take this long.
    pub connect_timeout: Duration,
    /// After this long without a message the host is pinged, and a connection
    /// whose ping goes unanswered as long again counts as dropped.
    pub liveness: Duration,
    /// When the stored address does not answer, look for the host on the LAN
    /// (mDNS, by its id) for this long, and move to the address found there.
    /// Never for a host on loopback, which is not advertised.
    pub find_on_lan: Option<Duration>,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            first_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
            give_up_after: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(10),
            liveness: Duration::from_secs(15),
            find_on_lan: None,
        }
    }
}

impl ReconnectPolicy {
    /// The pause before attempt `attempt + 1` (1-based): exponential, capped,
    /// with "equal jitter" (between half and all of it) so that many clients
    /// cut off at once do not come back at once.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let doubling = 2u32.saturating_pow(attempt.saturating_sub(1).min(20));
        let full = self
            .first_delay
            .saturating_mul(doubling)
            .min(self.max_delay);
        let half = full / 2;
        half + full.saturating_sub(half).mul_f64(rng.random::<f64>())
    }
}

/// What the connection is doing, for a status line.
#[derive(Debug, Clone)]
pub enum LinkEvent {
    /// The connection dropped; reconnecting starts at once.
    Lost { error: String },
    /// An attempt failed; the next one comes after `retry_in`.
    Retrying {
        attempt: u32,
        error: String,
        retry_in: Duration,
        down_for: Duration,
        give_up_in: Duration,
    },
    /// Connected again, initialized and resubscribed.
    Restored { attempts: u32, down_for: Duration },
    /// The host no longer answered at `from`, and was found on the LAN at `to`.
    Moved { from: String, to: String },
    /// No more attempts: the give-up time passed, or trying again cannot help.
    Failed { error: String },
}

/// Told about drops and reconnects, e.g. to show a status line.
pub type LinkObserver = Box<dyn FnMut(&LinkEvent) + Send>;

/// A notification, handed out once.
#[derive(Debug, Clone)]
pub enum Notice {
    Chunk(LogChunk),
    Updated(TaskUpdate),
    PermissionRequest(PermissionRequest),
    PermissionResolved(PermissionResolved),
    /// Any other notification, as sent.
    Other(Value),
}

/// Counters of what reconnecting did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Connections restored after a drop.
    pub reconnects: u64,
    /// Calls sent again after a drop.
    pub retried_calls: u64,
}

/// What the session knows of a followed task.
#[derive(Debug, Default)]
struct Follow {
    /// The seq of the next chunk to hand out.
    next_seq: u64,
    status: Option<TaskStatus>,
    finished: bool,
    /// Permission requests handed out already.
    asked: HashSet<String>,
}

/// Tells a session, from anywhere (say the operating system's callback),
/// that the device's network changed. The session then gives its
/// connection `NETWORK_CHANGE_PROBE` to show it is alive: a call under way
/// must be answered within it, and a session waiting for notifications
/// pings the host. A connection that does not is dropped, and the session
/// reconnects at once. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct NetworkChanges(Arc<Notify>);

impl NetworkChanges {
    /// The network changed (a new Wi-Fi, Wi-Fi to cellular, a new address).
    pub fn changed(&self) {
        self.0.notify_one();
    }
}

/// A session with a paired host that reconnects by itself.
pub struct HostSession {
    host: KnownHost,
    client_name: String,
    policy: ReconnectPolicy,
    link: Option<Link>,
    /// Notifications read before a connection dropped, not yet handed out.
    salvaged: VecDeque<Received>,
    follows: HashMap<String, Follow>,
    /// Followed tasks that finished, oldest first.
    finished: VecDeque<String>,
    observer: Option<LinkObserver>,
    stats: LinkStats,
    network: NetworkChanges,
}

impl std::fmt::Debug for HostSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostSession")
            .field("host", &self.host.name)
            .field("connected", &self.link.is_some())
            .field("follows", &self.follows.len())
            .field("stats", &self.stats)
            .finish()
    }
}

/// How one connection attempt failed.
enum Attempt {
    /// Worth trying again (dropped, timed out).
    Retry(String),
    /// Nothing answered at the address (nor on the LAN): worth trying again
    /// after a drop, but reported at once on the first connection.
    Unreachable { cause: String },
    /// Trying again cannot help (impersonation, revoked device).
    Fatal(SessionError),
}

impl HostSession {
    /// Connects (retrying as `policy` says) and initializes.
    pub async fn open(
        host: KnownHost,
        client_name: &str,
        policy: ReconnectPolicy,
    ) -> Result<HostSession, SessionError> {
        Self::open_observed(host, client_name, policy, None).await
    }

    /// Like `open`, telling `observer` about the connection as it goes.
    pub async fn open_observed(
        host: KnownHost,
        client_name: &str,
        policy: ReconnectPolicy,
        observer: Option<LinkObserver>,
    ) -> Result<HostSession, SessionError> {
        let mut session = HostSession {
            host,
            client_name: client_name.to_owned(),
            policy,
            link: None,
            salvaged: VecDeque::new(),
            follows: HashMap::new(),
            finished: VecDeque::new(),
            observer,
            stats: LinkStats::default(),
            network: NetworkChanges::default(),
        };
        session.reconnect(None).await?;
        Ok(session)
    }

    /// Sets who hears about drops and reconnects.
    pub fn on_link_event(&mut self, observer: impl FnMut(&LinkEvent) + Send + 'static) {
        self.observer = Some(Box::new(observer));
    }

    /// The host this session talks to.
    pub fn host(&self) -> &KnownHost {
        &self.host
    }

    /// What reconnecting has done so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    fn emit(&mut self, event: LinkEvent) {
        if let Some(observer) = self.observer.as_mut() {
            observer(&event);
        }
    }

    /// A handle that tells this session about network changes from
    /// elsewhere (while it is busy in a call or waiting for notifications).
    pub fn network_changes(&self) -> NetworkChanges {
        self.network.clone()
    }

    /// Tells the session that the device's network changed (a new Wi-Fi, Wi-Fi
    /// to cellular, a new address), as the operating system reports it. A
    /// connection made on the old network may have gone silent for good, and
    /// reading alone notices that only after twice `liveness`; so the host is
    /// pinged at once and, when it does not answer within
    /// `NETWORK_CHANGE_PROBE`, the connection is dropped and the next call or
    /// `next_notice` reconnects straight away (resuming every followed task).
    /// Returns whether the connection was kept.
    pub async fn network_changed(&mut self) -> bool {
        let Some(link) = self.link.as_mut() else {
            return false;
        };
        let failure =
            match tokio::time::timeout(NETWORK_CHANGE_PROBE, link.call("$/ping", &json!({}))).await
            {
                Ok(Ok(_) | Err(ClientError::Rpc(_))) => return true,
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!(
                    "the host did not answer a ping within {} ms of a network change",
                    NETWORK_CHANGE_PROBE.as_millis()
                ),
            };
        self.drop_link(failure);
        false
    }

    /// Calls a method; after a drop it reconnects and, when that is safe, sends the call again.
    pub async fn call<T: DeserializeOwned>(
        &mut self,
        method: &str,
        params: Value,
    ) -> Result<T, SessionError> {
        let repeatable = safe_to_repeat(method, &params);
        loop {
            let timeout = self.policy.connect_timeout.max(self.policy.liveness) * 2;
            let network = Arc::clone(&self.network.0);
            let link = self.connected().await?;
            // A call on a stalled connection is abandoned: a repeatable one is
            // sent again, any other fails as interrupted (it waited forever
            // on a connection that had gone silent, e.g. after a roam). After
            // a network change the answer must come within the probe time.
            let outcome = {
                let deadline = tokio::time::sleep(timeout);
                tokio::pin!(deadline);
                let call = link.call(method, &params);
                tokio::pin!(call);
                let mut probing = false;
                loop {
                    tokio::select! {
                        outcome = &mut call => break outcome,
                        _ = &mut deadline => break Err(ClientError::Io(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            if probing {
                                format!(
                                    "no answer to `{method}` within {} ms of a network change",
                                    NETWORK_CHANGE_PROBE.as_millis()
                                )
                            } else {
                                format!("no answer to `{method}` within {} s", timeout.as_secs())
                            },
                        ))),
                        _ = network.notified() => {
                            let probe = tokio::time::Instant::now() + NETWORK_CHANGE_PROBE;
                            if probe < deadline.deadline() {
                                deadline.as_mut().reset(probe);
                                probing = true;
                            }
                        }
                    }
                }
            };
            match outcome {
                Ok(value) => {
                    return serde_json::from_value(value).map_err(|e| {
                        SessionError::Connection(format!(
                            "the host's answer to `{method}` is not what this client expects: {e}"
                        ))
                    });
                }
                Err(ClientError::Rpc(e)) => return Err(SessionError::Rpc(e)),
                Err(e) => {
                    self.drop_link(e.to_string());
                    if !repeatable {
                        return Err(SessionError::Interrupted {
                            method: method.to_owned(),
                        });
                    }
                    self.stats.retried_calls += 1;
                }
            }
        }
    }

    /// Sends a notification on the current connection (reconnecting first if there is none).
    pub async fn notify(&mut self, method: &str, params: Value) -> Result<(), SessionError> {
        let link = self.connected().await?;
        let message = json!({"jsonrpc": "2.0", "method": method, "params": params});
        if let Err(e) = link.send(&message).await {
            self.drop_link(e.to_string());
            return Err(SessionError::Interrupted {
                method: method.to_owned(),
            });
        }
        Ok(())
    }

    /// Starts a task and follows it from its first chunk. Without an
    /// idempotency key one is made, so that sending it again after a drop
    /// returns the same task.
    pub async fn run_task(
        &mut self,
        mut params: TaskRunParams,
    ) -> Result<TaskRunResult, SessionError> {
        if params.idempotency_key.is_none() {
            params.idempotency_key = Some(idempotency_key());
        }
        let params = serde_json::to_value(&params)
            .map_err(|e| SessionError::Connection(format!("cannot encode task.run: {e}")))?;
        let started: TaskRunResult = self.call("task.run", params).await?;
        // The host follows a task for the connection that started it, from seq 1.
        self.follows
            .entry(started.task_id.clone())
            .or_insert_with(|| Follow {
                next_seq: 1,
                ..Follow::default()
            });
        Ok(started)
    }

    /// Follows a task from `from_seq`: its output and status changes arrive
    /// through `next_notice`, across reconnects, until its final status.
    pub async fn follow(
        &mut self,
        task_id: &str,
        from_seq: u64,
    ) -> Result<TaskSubscribeResult, SessionError> {
        let from_seq = from_seq.max(1);
        // Known before the call, so that a reconnect during it resubscribes.
        self.follows.insert(
            task_id.to_owned(),
            Follow {
                next_seq: from_seq,
                ..Follow::default()
            },
        );
        let result: Result<TaskSubscribeResult, _> = self
            .call(
                "task.subscribe",
                json!({"taskId": task_id, "fromSeq": from_seq}),
            )
            .await;
        match result {
            Ok(started) => {
                // The host starts at most just past its last chunk.
                if let Some(follow) = self.follows.get_mut(task_id) {
                    follow.next_seq = started.from_seq.max(1);
                }
                Ok(started)
            }
            Err(e) => {
                self.follows.remove(task_id);
                Err(e)
            }
        }
    }

    /// The seq of the next chunk of a followed task.
    pub fn next_seq(&self, task_id: &str) -> Option<u64> {
        self.follows.get(task_id).map(|f| f.next_seq)
    }

    /// The next notification, each one once, reconnecting as needed.
    ///
    /// Safe to use in `select!`: nothing is lost when it is cancelled.
    pub async fn next_notice(&mut self) -> Result<Notice, SessionError> {
        loop {
            let message = match self.salvaged.pop_front() {
                Some(message) => message,
                None => match self.read_notification().await? {
                    Some(message) => message,
                    None => continue,
                },
            };
            if let Some(notice) = self.admit(message) {
                return Ok(notice);
            }
        }
    }

    /// One notification from the connection; `None` when the connection dropped (and was marked so).
    async fn read_notification(&mut self) -> Result<Option<Received>, SessionError> {
        let liveness = self.policy.liveness;
        let network = Arc::clone(&self.network.0);
        let link = self.connected().await?;
        let read = tokio::select! {
            read = tokio::time::timeout(liveness, link.next_notification()) => read,
            // The caller reads again, on this connection or a new one.
            _ = network.notified() => {
                self.network_changed().await;
                return Ok(None);
            }
        };
        let failure = match read {
            Ok(Ok(message)) => return Ok(Some(message)),
            Ok(Err(e)) => e.to_string(),
            // Silence: make sure the host is still there.
            Err(_) => match tokio::time::timeout(liveness, link.call("$/ping", &json!({}))).await {
                Ok(Ok(_) | Err(ClientError::Rpc(_))) => return Ok(None),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!(
                    "the host did not answer a ping within {} s",
                    liveness.as_secs()
                ),
            },
        };
        self.drop_link(failure);
        Ok(None)
    }

    /// Whether a notification is new, updating what is known of its task.
    fn admit(&mut self, received: Received) -> Option<Notice> {
        let message = match received {
            Received::Chunk(chunk) => return self.admit_chunk(chunk),
            Received::Message(message) => message,
        };
        let method = message.get("method")?.as_str()?.to_owned();
        let params = message.get("params").cloned().unwrap_or(Value::Null);
        match method.as_str() {
            "log.chunk" => {
                let Ok(chunk) = serde_json::from_value::<LogChunk>(params) else {
                    return Some(Notice::Other(message));
                };
                self.admit_chunk(chunk)
            }
            "task.updated" => {
                let Ok(update) = serde_json::from_value::<TaskUpdate>(params) else {
                    return Some(Notice::Other(message));
                };
                if let Some(follow) = self.follows.get_mut(&update.task_id) {
                    if follow.finished || follow.status == Some(update.status) {
                        return None;
                    }
                    follow.status = Some(update.status);
                    if update.status.is_final() {
                        follow.finished = true;
                        follow.asked = HashSet::new();
                        self.finished.push_back(update.task_id.clone());
                        if self.finished.len() > FINISHED_KEPT
                            && let Some(oldest) = self.finished.pop_front()
                        {
                            self.follows.remove(&oldest);
                        }
                    }
                }
                Some(Notice::Updated(update))
            }
            "permission.request" => {
                let Ok(request) = serde_json::from_value::<PermissionRequest>(params) else {
                    return Some(Notice::Other(message));
                };
                if let Some(follow) = self.follows.get_mut(&request.task_id)
                    && !follow.asked.insert(request.request_id.clone())
                {
                    return None;
                }
                Some(Notice::PermissionRequest(request))
            }
            "permission.resolved" => match serde_json::from_value::<PermissionResolved>(params) {
                Ok(resolved) => Some(Notice::PermissionResolved(resolved)),
                Err(_) => Some(Notice::Other(message)),
            },
            _ => Some(Notice::Other(message)),
        }
    }

    fn admit_chunk(&mut self, chunk: LogChunk) -> Option<Notice> {
        if let Some(follow) = self.follows.get_mut(&chunk.task_id) {
            if follow.finished || chunk.seq < follow.next_seq {
                return None;
            }
            // A seq past `next_seq` is a gap the host itself has
            // (a chunk it could not store); waiting would not fill it.
            follow.next_seq = chunk.seq + 1;
        }
        Some(Notice::Chunk(chunk))
    }

    /// The current connection, reconnecting first when there is none.
    async fn connected(&mut self) -> Result<&mut Link, SessionError> {
        if self.link.is_none() {
            self.reconnect(Some(())).await?;
        }
        self.link
            .as_mut()
            .ok_or_else(|| SessionError::Connection("not connected".into()))
    }

    /// Forgets the connection, keeping what it had read.
    fn drop_link(&mut self, error: String) {
        if let Some(mut link) = self.link.take() {
            self.salvaged.extend(link.salvage());
            tracing::debug!(host = %self.host.name, %error, "connection lost");
            self.emit(LinkEvent::Lost { error });
        }
    }

    /// Connects until it works, a fatal error, or the give-up time.
    /// `after_drop` is `Some` when a connection existed before.
    async fn reconnect(&mut self, after_drop: Option<()>) -> Result<(), SessionError> {
        let down_since = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let tried = tokio::time::timeout(self.policy.connect_timeout, self.connect_once())
                .await
                .unwrap_or_else(|_| {
                    Err(Attempt::Retry(format!(
                        "no connection within {} s",
                        self.policy.connect_timeout.as_secs()
                    )))
                });
            let error = match tried {
                Ok(link) => {
                    self.link = Some(link);
                    if after_drop.is_some() {
                        self.stats.reconnects += 1;
                        self.emit(LinkEvent::Restored {
                            attempts: attempt,
                            down_for: down_since.elapsed(),
                        });
                    }
                    return Ok(());
                }
                Err(Attempt::Fatal(e)) => {
                    self.emit(LinkEvent::Failed {
                        error: e.to_string(),
                    });
                    return Err(e);
                }
                Err(Attempt::Unreachable { cause }) if after_drop.is_none() => {
                    let e = SessionError::Unreachable {
                        host: self.host.name.clone(),
                        address: self.host.address.clone(),
                        cause,
                    };
                    self.emit(LinkEvent::Failed {
                        error: e.to_string(),
                    });
                    return Err(e);
                }
                Err(Attempt::Retry(error)) => error,
                Err(Attempt::Unreachable { cause }) => {
                    format!("cannot reach {}: {cause}", self.host.address)
                }
            };
            let down_for = down_since.elapsed();
            let Some(give_up_in) = self.policy.give_up_after.checked_sub(down_for) else {
                let gave_up = SessionError::GaveUp {
                    host: self.host.name.clone(),
                    address: self.host.address.clone(),
                    waited: humantime::format_duration(Duration::from_secs(down_for.as_secs()))
                        .to_string(),
                    last_error: error,
                };
                self.emit(LinkEvent::Failed {
                    error: gave_up.to_string(),
                });
                return Err(gave_up);
            };
            let retry_in = self.policy.delay(attempt, &mut rand::rng()).min(give_up_in);
            self.emit(LinkEvent::Retrying {
                attempt,
                error,
                retry_in,
                down_for,
                give_up_in,
            });
            tokio::time::sleep(retry_in).await;
        }
    }

    /// Looks for the host on the LAN by its id and connects to the first of
    /// its advertised addresses that answers with the pinned certificate.
    /// The advertisement is only a hint: the pin decides.
    async fn find_on_lan(
        &mut self,
        browse_for: Duration,
        unreachable: ConnectError,
    ) -> Result<super::tls::Connected, Attempt> {
        let host_id = self.host.host_id.clone();
        let found = crate::discovery::find(browse_for, |h| h.host_id.as_deref() == Some(&host_id))
            .await
            .map_err(|e| Attempt::Unreachable {
                cause: format!(
                    "{}; and cannot look for it on the LAN: {e}",
                    unreachable.cause()
                ),
            })?;
        let Some(found) = found else {
            return Err(Attempt::Unreachable {
                cause: format!(
                    "{}; not found on the LAN either (on this network, and advertising?)",
                    unreachable.cause()
                ),
            });
        };
        let mut last = unreachable.cause();
        for endpoint in &found.endpoints {
            let address = endpoint.to_string();
            match connect_tls(
                &address,
                Some(&self.host.fingerprint),
                self.policy.connect_timeout,
            )
            .await
            {
                Ok(connected) => {
                    let from = std::mem::replace(&mut self.host.address, address.clone());
                    self.emit(LinkEvent::Moved { from, to: address });
                    return Ok(connected);
                }
                Err(e) if e.is_unreachable() => last = format!("{address}: {}", e.cause()),
                Err(e) => return Err(connect_failed(e)),
            }
        }
        Err(Attempt::Unreachable { cause: last })
    }

    /// One attempt: TLS with the pinned certificate, `initialize`, then resubscribing.
    async fn connect_once(&mut self) -> Result<Link, Attempt> {
        let tried = connect_tls(
            &self.host.address,
            Some(&self.host.fingerprint),
            self.policy.connect_timeout,
        )
        .await;
        let connected = match tried {
            Err(e) if e.is_unreachable() && !self.host.is_on_loopback() => {
                match self.policy.find_on_lan {
                    Some(browse_for) => self.find_on_lan(browse_for, e).await?,
                    None => return Err(Attempt::Unreachable { cause: e.cause() }),
                }
            }
            other => other.map_err(connect_failed)?,
        };
        let mut link = Link::start(connected.connection);
        let init = json!({
            "clientInfo": {"name": self.client_name, "version": env!("CARGO_PKG_VERSION")},
            "protocolVersion": crate::protocol::PROTOCOL_VERSION,
            "auth": {"deviceId": self.host.device_id, "token": self.host.token},
        });
        match link.call("initialize", &init).await {
            Ok(_) => {}
            Err(ClientError::Rpc(e)) => return Err(Attempt::Fatal(SessionError::Refused(e))),
            Err(e) => return Err(Attempt::Retry(e.to_string())),
        }
        let resume: Vec<(String, u64)> = self
            .follows
            .iter()
            .filter(|(_, f)| !f.finished)
            .map(|(id, f)| (id.clone(), f.next_seq))
            .collect();
        for (task_id, from_seq) in resume {
            let params = json!({"taskId": task_id, "fromSeq": from_seq});
            match link.call("task.subscribe", &params).await {
                Ok(_) => {}
                Err(ClientError::Rpc(e)) => {
                    return Err(Attempt::Fatal(SessionError::Rpc(resubscribe_refused(
                        &task_id, e,
                    ))));
                }
                Err(e) => return Err(Attempt::Retry(e.to_string())),
            }
        }
        Ok(link)
    }
}

fn connect_failed(e: ConnectError) -> Attempt {
    match e {
        ConnectError::FingerprintMismatch { .. } => Attempt::Fatal(SessionError::Connect(e)),
        e if e.is_unreachable() => Attempt::Unreachable { cause: e.cause() },
        other => Attempt::Retry(other.to_string()),
    }
}

fn resubscribe_refused(task_id: &str, mut e: RpcError) -> RpcError {
    e.message = format!(
        "cannot follow task {task_id} again after reconnecting: {}",
        e.message
    );
    e
}

/// Whether sending a call twice has the effect of sending it once.
fn safe_to_repeat(method: &str, params: &Value) -> bool {
    match method {
        "task.run" => params.get("idempotencyKey").is_some_and(Value::is_string),
        "initialize" | "$/ping" | "task.get" | "task.list" | "task.logs" | "task.subscribe"
        | "task.unsubscribe" | "health.get" | "metrics.get" | "devices.list" | "pairing.status"
        | "permission.rules" | "permission.audit" => true,
        _ => false,
    }
}

/// A fresh idempotency key: 128 random bits.
fn idempotency_key() -> String {
    let bits: u128 = rand::rng().random();
    format!("k_{bits:032x}")
}

type TlsWriter = FrameWriter<WriteHalf<TlsStream<TcpStream>>>;

/// One connection: a task reads frames into a channel (so that reading can
/// be abandoned at any point without losing a message), the session writes.
struct Link {
    writer: TlsWriter,
    incoming: mpsc::Receiver<Result<Received, ClientError>>,
    reader: JoinHandle<()>,
    next_id: u64,
    /// Notifications read while waiting for a reply, in order.
    pending: VecDeque<Received>,
}

/// One message read from the host. `log.chunk` notifications, the bulk of
/// what a streaming task sends, are decoded straight from their bytes.
#[derive(Debug)]
enum Received {
    Chunk(LogChunk),
    Message(Value),
}

impl Received {
    fn decode(body: &[u8]) -> Result<Received, ClientError> {
        if let Some(chunk) = super::decode_log_chunk(body) {
            return Ok(Received::Chunk(chunk));
        }
        serde_json::from_slice(body)
            .map(Received::Message)
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }

    fn is_notification(&self) -> bool {
        match self {
            Received::Chunk(_) => true,
            Received::Message(message) => message.get("method").is_some(),
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Link {
    fn start(connection: super::TlsConnection) -> Link {
        let (mut reader, writer) = connection.into_parts();
        let (tx, incoming) = mpsc::channel(READ_AHEAD);
        let reader = tokio::spawn(async move {
            loop {
                let item = match reader.next().await {
                    Ok(ReadEvent::Frame(body)) => Received::decode(&body),
                    Ok(ReadEvent::Eof) => Err(ClientError::Closed),
                    Ok(ReadEvent::TooLarge { .. }) => Err(ClientError::Protocol(
                        "a frame from the host was too large".into(),
                    )),
                    // The host cut the connection off without a TLS goodbye
                    // (rustls: "peer closed connection without sending TLS
                    // close_notify"): to the person, the connection closed.
                    Err(crate::transport::FrameError::Io(e))
                        if e.kind() == std::io::ErrorKind::UnexpectedEof =>
                    {
                        Err(ClientError::Closed)
                    }
                    Err(e) => Err(ClientError::Frame(e)),
                };
                let end = item.is_err();
                if tx.send(item).await.is_err() || end {
                    return;
                }
            }
        });
        Link {
            writer,
            incoming,
            reader,
            next_id: 0,
            pending: VecDeque::new(),
        }
    }

    async fn send(&mut self, message: &Value) -> Result<(), ClientError> {
        let body = serde_json::to_vec(message).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.writer.write_frame(&body).await?;
        self.writer.flush().await?;
        Ok(())
    }

    async fn receive(&mut self) -> Result<Received, ClientError> {
        self.incoming
            .recv()
            .await
            .unwrap_or(Err(ClientError::Closed))
    }

    /// Sends a request and waits for its reply, keeping notifications that arrive meanwhile.
    async fn call(&mut self, method: &str, params: &Value) -> Result<Value, ClientError> {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await?;
        loop {
            let message = match self.receive().await? {
                Received::Message(message) => message,
                chunk => {
                    self.pending.push_back(chunk);
                    continue;
                }
            };
            match Incoming::of(message, id) {
                Incoming::Notification(message) => {
                    self.pending.push_back(Received::Message(message))
                }
                // Replies to calls abandoned earlier are passed over.
                Incoming::OtherReply => {}
                Incoming::Reply(result) => return result,
            }
        }
    }

    async fn next_notification(&mut self) -> Result<Received, ClientError> {
        if let Some(message) = self.pending.pop_front() {
            return Ok(message);
        }
        loop {
            let message = self.receive().await?;
            if message.is_notification() {
                return Ok(message);
            }
        }
    }

    /// The notifications read but not handed out, in order.
    fn salvage(&mut self) -> Vec<Received> {
        let mut out: Vec<Received> = self.pending.drain(..).collect();
        while let Ok(Ok(message)) = self.incoming.try_recv() {
            if message.is_notification() {
                out.push(message);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_jitter_in_the_upper_half() {
        let policy = ReconnectPolicy {
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..ReconnectPolicy::default()
        };
        let mut rng = rand::rng();
        for (attempt, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (30, 1000),
        ] {
            for _ in 0..50 {
                let d = policy.delay(attempt, &mut rng).as_millis() as u64;
                assert!(
                    (full / 2..=full).contains(&d),
                    "attempt {attempt}: {d} ms not in [{}, {full}]",
                    full / 2
                );
            }
        }
    }

    #[test]
    fn only_calls_that_can_be_repeated_are_repeated() {
        assert!(safe_to_repeat("task.get", &json!({"taskId": "t"})));
        assert!(safe_to_repeat(
            "task.run",
            &json!({"command": "x", "idempotencyKey": "k"})
        ));
        assert!(!safe_to_repeat("task.run", &json!({"command": "x"})));
        assert!(!safe_to_repeat("permission.reply", &json!({})));
        assert!(!safe_to_repeat("task.cancel", &json!({})));
        assert_ne!(idempotency_key(), idempotency_key());
    }

    fn session() -> HostSession {
        HostSession {
            host: KnownHost {
                name: "h".into(),
                host_id: "id".into(),
                address: "127.0.0.1:1".into(),
                fingerprint: "00".into(),
                device_id: "d".into(),
                token: "t".into(),
                scopes: Vec::new(),
                paired_at: String::new(),
            },
            client_name: "test".into(),
            policy: ReconnectPolicy::default(),
            link: None,
            salvaged: VecDeque::new(),
            follows: HashMap::new(),
            finished: VecDeque::new(),
            observer: None,
            stats: LinkStats::default(),
            network: NetworkChanges::default(),
        }
    }

    fn chunk_value(seq: u64) -> Value {
        json!({"jsonrpc": "2.0", "method": "log.chunk", "params": {
            "taskId": "t1", "seq": seq, "stream": "stdout", "data": format!("{seq}\n"), "ts": "2026-01-01T00:00:00.000Z"}})
    }

    /// A chunk as read off the wire (decoded straight from its bytes).
    fn chunk(seq: u64) -> Received {
        let received = Received::decode(&serde_json::to_vec(&chunk_value(seq)).unwrap()).unwrap();
        assert!(matches!(received, Received::Chunk(_)));
        received
    }

    /// A chunk that came as a general message (the path any other shape takes).
    fn chunk_as_message(seq: u64) -> Received {
        Received::Message(chunk_value(seq))
    }

    fn update(status: &str) -> Received {
        let message = json!({"jsonrpc": "2.0", "method": "task.updated", "params": {"taskId": "t1", "status": status}});
        Received::decode(&serde_json::to_vec(&message).unwrap()).unwrap()
    }

    #[test]
    fn replayed_chunks_and_statuses_are_handed_out_once() {
        let mut s = session();
        s.follows.insert(
            "t1".into(),
            Follow {
                next_seq: 1,
                ..Follow::default()
            },
        );
        // What an old subscription and a resubscription from seq 2 interleave into.
        let stream = [
            update("running"),
            chunk(1),
            chunk_as_message(2),
            update("running"),
            chunk(2),
            chunk(3),
            update("succeeded"),
            chunk_as_message(3),
            update("succeeded"),
        ];
        let mut seqs = Vec::new();
        let mut statuses = Vec::new();
        for message in stream {
            match s.admit(message) {
                Some(Notice::Chunk(c)) => seqs.push(c.seq),
                Some(Notice::Updated(u)) => statuses.push(u.status),
                Some(other) => panic!("{other:?}"),
                None => {}
            }
        }
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(statuses, vec![TaskStatus::Running, TaskStatus::Succeeded]);
        assert_eq!(s.next_seq("t1"), Some(4));
    }

    #[test]
    fn notifications_of_tasks_not_followed_pass_through() {
        let mut s = session();
        assert!(matches!(s.admit(chunk(5)), Some(Notice::Chunk(_))));
        assert!(matches!(
            s.admit(chunk_as_message(5)),
            Some(Notice::Chunk(_))
        ));
        assert!(matches!(
            s.admit(Received::Message(
                json!({"jsonrpc": "2.0", "method": "pairing.closed", "params": {}})
            )),
            Some(Notice::Other(_))
        ));
    }
}
