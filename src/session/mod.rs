//! One connection: who is calling, its lifecycle (`lifecycle`), its
//! subscriptions and its outbound queues, and the loop that reads frames,
//! dispatches calls and writes replies. Every transport runs this same loop.
//!
//! Replies and notifications have separate bounded queues and the writer
//! always takes replies first, so a flood of `log.chunk` never delays a
//! response. A subscription waits when its queue is full; it reads what it
//! missed from the store when it resumes, so a slow client costs no memory.
//! Replies count against the connection's reply budget (`budget`) until they
//! are written; network connections also have deadlines (`deadline`) and a
//! place in the host's connection budget (`admission`).
//!
//! All a connection knows of the host that serves it is `serving::Serving`
//! (the host implements it), and it reads frames with the codec of
//! `openwork_proto::transport`: this layer names neither the host, nor the
//! method handlers, nor the transports that run it.

pub(crate) mod admission;
pub(crate) mod budget;
pub(crate) mod deadline;
pub(crate) mod lifecycle;
pub(crate) mod serving;

use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::auth::{Principal, Scope};
use crate::rpc::message::{Message, encode_batch, encode_error, encode_result, parse_frame};
use crate::rpc::{Access, ErrorCode, Id, Incoming, RpcError, Scheduling};
use crate::tasks::{Audience, Feed, FeedItem};
use openwork_proto::transport::{Activity, FrameError, FrameReader, FrameWriter, ReadEvent};

use admission::Admission;
use budget::ReplyBudget;
use deadline::{Deadlines, Standing};
use lifecycle::Life;
pub use lifecycle::{ConnectionState, Lifecycle};
pub use serving::{AfterReply, Handled, Serving};

/// Replies queued before handlers wait.
const RESPONSE_QUEUE: usize = 64;
/// Notifications queued before subscriptions wait.
const NOTIFICATION_QUEUE: usize = 16;
/// How a connection is set up.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub principal: Principal,
    /// `stdio`, `unix` or `tls`, for logs and health.
    pub transport: &'static str,
    /// On end-of-input, keep delivering the output of tasks this connection
    /// follows until they end (scripts piping requests into `stdio`).
    pub drain_on_eof: bool,
    /// TLS exported keying material for pairing (TLS connections only).
    pub channel_binding: Option<[u8; 32]>,
    /// Who is on the other end, for logs and the pairing prompt.
    pub peer: String,
    /// The connection's place in the host's connection budget (network
    /// connections): it moves to the authenticated budget when the
    /// connection authenticates, and the connection closes if evicted.
    pub admission: Option<Arc<Admission>>,
    /// Deadlines the connection must meet (network connections).
    pub deadlines: Option<Deadlines>,
    /// The checked `Origin` of a browser's WebSocket (WebSocket connections only).
    pub origin: Option<String>,
}

impl SessionOptions {
    /// A local connection: the machine's owner.
    pub fn local(transport: &'static str) -> SessionOptions {
        SessionOptions {
            principal: Principal::Local,
            transport,
            drain_on_eof: true,
            channel_binding: None,
            peer: "local".to_owned(),
            admission: None,
            deadlines: None,
            origin: None,
        }
    }

    /// A connection from the network, not authenticated yet.
    pub(crate) fn network(
        transport: &'static str,
        peer: String,
        channel_binding: Option<[u8; 32]>,
        admission: Admission,
        deadlines: Deadlines,
    ) -> SessionOptions {
        SessionOptions {
            principal: Principal::Anonymous,
            transport,
            drain_on_eof: false,
            channel_binding,
            peer,
            admission: Some(Arc::new(admission)),
            deadlines: Some(deadlines),
            origin: None,
        }
    }
}

/// Failed `initialize` calls after which a connection is closed.
pub const MAX_FAILED_INITIALIZE: u32 = 3;

/// The largest frame an unauthenticated connection may send: enough for
/// `initialize` and pairing, and no more.
const UNAUTHENTICATED_MAX_FRAME: usize = 64 * 1024;

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// The client sent `exit`.
    Exit,
    /// The client closed its side.
    Eof,
    /// The host closed it: shutdown, revocation, a framing error or a write failure.
    Closed(String),
}

/// How a connection ended.
#[derive(Debug, Clone)]
pub struct SessionEnd {
    pub reason: EndReason,
    /// Whether `shutdown` came before the end (LSP: `exit` then exits with 0).
    pub after_shutdown: bool,
}

/// One connection's state, shared by its reader, handlers and subscriptions.
pub struct Session {
    pub id: u64,
    pub transport: &'static str,
    pub peer: String,
    channel_binding: Option<[u8; 32]>,
    origin: Option<String>,
    /// The last `auth.challenge` nonce and when it was issued.
    challenge: Mutex<Option<(String, std::time::Instant)>>,
    principal: RwLock<Principal>,
    /// The protocol's handshake state.
    lifecycle: Mutex<Lifecycle>,
    /// The connection's own lifecycle: its state, its work, the tokens that end it.
    life: Life,
    responses: mpsc::Sender<Bytes>,
    notifications: mpsc::Sender<Bytes>,
    /// Followed tasks: a generation number (to tell a replaced subscription
    /// from its successor) and the token that ends it.
    subscriptions: Mutex<HashMap<String, (u64, CancellationToken)>>,
    next_subscription: std::sync::atomic::AtomicU64,
    inflight: Mutex<HashMap<Id, CancellationToken>>,
    slots: Arc<Semaphore>,
    watching: Mutex<std::collections::HashSet<&'static str>>,
    admission: Option<Arc<Admission>>,
    /// Reply bytes produced and not yet written.
    replies: Arc<ReplyBudget>,
    failed_initializations: AtomicU32,
}

/// The receiving ends of a session's outbound queues, for its writer.
pub(crate) struct Outbound {
    responses: mpsc::Receiver<Bytes>,
    notifications: mpsc::Receiver<Bytes>,
    replies: Arc<ReplyBudget>,
}

impl Session {
    /// A session for a new connection, and the queues its writer drains.
    pub(crate) fn new(host: &dyn Serving, opts: &SessionOptions) -> (Arc<Session>, Outbound) {
        let (responses, response_rx) = mpsc::channel(RESPONSE_QUEUE);
        let (notifications, notification_rx) = mpsc::channel(NOTIFICATION_QUEUE);
        let replies = Arc::new(ReplyBudget::new(
            host.config().limits.max_reply_bytes_in_flight,
        ));
        let session = Arc::new(Session {
            id: host.next_session_id(),
            transport: opts.transport,
            peer: opts.peer.clone(),
            channel_binding: opts.channel_binding,
            origin: opts.origin.clone(),
            challenge: Mutex::new(None),
            principal: RwLock::new(opts.principal.clone()),
            lifecycle: Mutex::new(Lifecycle::New),
            responses,
            notifications,
            subscriptions: Mutex::new(HashMap::new()),
            next_subscription: std::sync::atomic::AtomicU64::new(0),
            inflight: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(host.config().limits.max_requests_in_flight)),
            life: Life::new(),
            watching: Mutex::new(std::collections::HashSet::new()),
            admission: opts.admission.clone(),
            replies: Arc::clone(&replies),
            failed_initializations: AtomicU32::new(0),
        });
        let outbound = Outbound {
            responses: response_rx,
            notifications: notification_rx,
            replies,
        };
        (session, outbound)
    }

    /// TLS exported keying material (TLS connections only).
    pub(crate) fn channel_binding(&self) -> Option<&[u8; 32]> {
        self.channel_binding.as_ref()
    }

    /// The page's origin, on a browser's WebSocket connection.
    pub(crate) fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    /// Issues a nonce for this connection (`auth.challenge`), replacing any earlier one.
    pub(crate) fn new_challenge(&self) -> String {
        let nonce = crate::auth::new_nonce();
        *self.challenge.lock() = Some((nonce.clone(), std::time::Instant::now()));
        nonce
    }

    /// Uses up the connection's nonce: whether it was `nonce` and still fresh.
    pub(crate) fn take_challenge(&self, nonce: &str) -> bool {
        self.challenge.lock().take().is_some_and(|(issued, at)| {
            at.elapsed() < crate::auth::CHALLENGE_TTL
                && bool::from(subtle::ConstantTimeEq::ct_eq(
                    issued.as_bytes(),
                    nonce.as_bytes(),
                ))
        })
    }

    /// True the first time it is called with `key` on this connection.
    pub(crate) fn watch_once(&self, key: &'static str) -> bool {
        self.watching.lock().insert(key)
    }

    /// A token cancelled when the connection closes.
    pub fn closed(&self) -> CancellationToken {
        self.life.closed()
    }

    /// A token cancelled as soon as the peer's side of the connection ends
    /// (EOF, a read error) or the connection closes, without waiting for the
    /// calls still in flight to finish (pairing withdraws a device's request
    /// by it).
    pub(crate) fn peer_gone(&self) -> CancellationToken {
        self.life.peer_gone()
    }

    /// Runs `work` (sending notifications) until it ends or the connection closes.
    pub(crate) fn spawn_notifier<F>(&self, work: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let stop = self.life.notifier_token();
        self.life.forwarders.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = work => {}
            }
        });
    }

    /// The principal behind the connection.
    pub(crate) fn principal(&self) -> Principal {
        self.principal.read().clone()
    }

    /// Sets who is calling; an authenticated connection leaves the
    /// unauthenticated connection budget.
    pub(crate) fn set_principal(&self, principal: Principal) {
        if principal.is_authenticated()
            && let Some(admission) = &self.admission
        {
            admission.authenticated();
        }
        *self.principal.write() = principal;
    }

    /// Where the protocol's handshake is.
    pub(crate) fn lifecycle(&self) -> Lifecycle {
        *self.lifecycle.lock()
    }

    /// Moves the protocol's handshake on (`initialize`, `shutdown`).
    pub(crate) fn set_lifecycle(&self, state: Lifecycle) {
        *self.lifecycle.lock() = state;
    }

    /// Queues a reply; it counts against the reply budget until written.
    pub(crate) async fn respond(&self, frame: Bytes) {
        let len = frame.len();
        self.replies.produced(len);
        if self.responses.send(frame).await.is_err() {
            self.replies.taken(len);
        }
    }

    /// Counts a failed `initialize`; returns how many this connection has had.
    pub(crate) fn initialize_failed(&self) -> u32 {
        self.failed_initializations.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Queues a notification, waiting for room.
    pub(crate) async fn notify(&self, frame: Bytes) {
        let _ = self.notifications.send(frame).await;
    }

    /// Ends the connection after what is queued has been written.
    pub(crate) fn close(&self, reason: impl Into<String>) {
        self.life.close(reason.into());
    }

    /// Ends the connection at once, as a revocation must: the caller loses
    /// its principal, its subscriptions stop, its in-flight calls are
    /// cancelled, nothing still queued for it is written, and the socket
    /// closes. Unlike `close`, no grace: when this returns, no further
    /// notification is produced for the connection.
    pub(crate) fn cut_off(&self, reason: impl Into<String>) {
        self.set_principal(Principal::Anonymous);
        self.life.cut_off(reason.into());
    }

    /// Whether the connection is closing.
    pub fn is_closing(&self) -> bool {
        self.life.is_closing()
    }

    /// Where the connection is in its lifecycle.
    pub fn state(&self) -> ConnectionState {
        self.life.state()
    }

    /// Follows a task: its notifications go to this connection until it ends
    /// or `unsubscribe` is called. Replaces an earlier subscription to the same task.
    pub(crate) fn subscribe(self: &Arc<Self>, task_id: &str, feed: Feed) {
        let token = self.life.notifier_token();
        let generation = self
            .next_subscription
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let replaced = self
            .subscriptions
            .lock()
            .insert(task_id.to_owned(), (generation, token.clone()));
        if let Some((_, old)) = replaced {
            old.cancel();
        }
        let session = Arc::clone(self);
        let task_id = task_id.to_owned();
        self.life.forwarders.spawn(async move {
            forward(Arc::clone(&session), feed, token).await;
            let mut subs = session.subscriptions.lock();
            if subs.get(&task_id).is_some_and(|(g, _)| *g == generation) {
                subs.remove(&task_id);
            }
        });
    }

    /// Stops following a task; returns whether it was followed.
    pub(crate) fn unsubscribe(&self, task_id: &str) -> bool {
        match self.subscriptions.lock().remove(task_id) {
            Some((_, token)) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Registers an in-flight request so that `$/cancelRequest` can end it.
    fn track_request(&self, id: &Id) -> CancellationToken {
        let token = self.life.call_token();
        self.inflight.lock().insert(id.clone(), token.clone());
        token
    }

    /// Cancels an in-flight request (`$/cancelRequest`).
    pub(crate) fn cancel_request(&self, id: &Id) -> bool {
        match self.inflight.lock().get(id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }
}

async fn forward(session: Arc<Session>, mut feed: Feed, stop: CancellationToken) {
    let queue = session.notifications.clone();
    loop {
        let item = tokio::select! {
            _ = stop.cancelled() => return,
            item = feed.next() => item,
        };
        match item {
            Ok(Some(FeedItem { frame, audience })) => {
                if let Audience::PermissionHolders { except } = audience
                    && (except == Some(session.id)
                        || !session.principal().has(Scope::PermissionsReply))
                {
                    continue;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    sent = queue.send(frame) => if sent.is_err() { return },
                }
            }
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "a subscription stopped: cannot read the task's log");
                return;
            }
        }
    }
}

/// Runs a connection to its end.
pub(crate) async fn run<R, W>(
    host: Arc<dyn Serving>,
    mut reader: FrameReader<R>,
    writer: FrameWriter<W>,
    opts: SessionOptions,
) -> SessionEnd
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (session, outbound) = Session::new(host.as_ref(), &opts);
    host.session_opened(&session);
    let stop_writer = CancellationToken::new();
    let writer_task = tokio::spawn({
        let (stop, session) = (stop_writer.clone(), Arc::clone(&session));
        let aborted = session.life.aborted();
        async move {
            let written = tokio::select! {
                // A cut-off connection gets nothing more, not even what is queued.
                _ = aborted.cancelled() => Ok(()),
                written = write_loop(writer, outbound, stop) => written,
            };
            if let Err(e) = written {
                tracing::debug!(session = session.id, error = %e, "write failed; closing the connection");
                session.close("the client stopped reading (write failed)");
            }
        }
    });

    let reason = read_loop(&host, &session, &mut reader, opts.deadlines).await;
    session.life.peer_ended();
    drop(reader);
    let path = session
        .life
        .wind_down(
            &host.shutdown_token(),
            &reason,
            opts.drain_on_eof,
            stop_writer,
            writer_task,
        )
        .await;
    tracing::trace!(session = session.id, ?path, "connection wound down");
    let end = SessionEnd {
        reason,
        after_shutdown: session.lifecycle() == Lifecycle::ShuttingDown,
    };
    host.session_closed(&session, &end);
    end
}

async fn read_loop<R: AsyncRead + Unpin>(
    host: &Arc<dyn Serving>,
    session: &Arc<Session>,
    reader: &mut FrameReader<R>,
    deadlines: Option<Deadlines>,
) -> EndReason {
    let activity = reader.activity();
    let evicted = session.admission.as_ref().map(|a| a.evicted());
    let closed = session.life.closed();
    let shutdown = host.shutdown_token();
    loop {
        // Before authentication, a connection may only send small frames.
        let limit = host.config().limits.max_frame_bytes;
        reader.set_limit(if session.principal().is_authenticated() {
            limit
        } else {
            limit.min(UNAUTHENTICATED_MAX_FRAME)
        });
        let event = tokio::select! {
            // A connection being closed reads nothing more, however much is buffered.
            biased;
            _ = closed.cancelled() => {
                let reason = session.life.close_reason().unwrap_or_default();
                return if reason == "exit" { EndReason::Exit } else { EndReason::Closed(reason) };
            }
            _ = shutdown.cancelled() => return EndReason::Closed("the host is shutting down".into()),
            _ = cancelled(evicted.as_ref()) => return EndReason::Closed(
                "a newer connection took the place of this unauthenticated one (network.max_unauthenticated)".into()
            ),
            why = watch(deadlines, &activity, session) => return EndReason::Closed(why),
            // While the client has not taken the replies that fill its
            // budget, read nothing more from it.
            event = async {
                session.replies.room_to_read().await;
                reader.next().await
            } => event,
        };
        match event {
            Ok(ReadEvent::Frame(bytes)) => handle_frame(host, session, &bytes).await,
            Ok(ReadEvent::TooLarge { size, limit }) => {
                let error = RpcError::frame_too_large(size, limit);
                session.respond(encode_error(None, &error)).await;
            }
            Ok(ReadEvent::Eof) => return EndReason::Eof,
            Err(FrameError::MalformedHeader(detail)) => {
                let error = RpcError::malformed_header(&detail);
                session.respond(encode_error(None, &error)).await;
                return EndReason::Closed(format!("malformed frame header: {detail}"));
            }
            Err(e) => return EndReason::Closed(e.to_string()),
        }
    }
}

/// Resolves when `token` is cancelled; never without one.
async fn cancelled(token: Option<&CancellationToken>) {
    match token {
        Some(token) => token.cancelled().await,
        None => std::future::pending().await,
    }
}

/// Resolves, with the reason, when the connection misses a deadline; never
/// for a connection without deadlines.
async fn watch(deadlines: Option<Deadlines>, activity: &Activity, session: &Session) -> String {
    let Some(deadlines) = deadlines else {
        return std::future::pending().await;
    };
    loop {
        let standing = Standing {
            authenticated: session.principal().is_authenticated(),
            initialized: session.lifecycle() != Lifecycle::New,
            busy: !session.life.handlers.is_empty(),
        };
        match deadline::check(&deadlines, activity, standing) {
            Ok(next) => tokio::time::sleep(next).await,
            Err(why) => return why,
        }
    }
}

async fn handle_frame(host: &Arc<dyn Serving>, session: &Arc<Session>, bytes: &[u8]) {
    match parse_frame(bytes) {
        Incoming::ParseError(error) => session.respond(encode_error(None, &error)).await,
        Incoming::Single(message) => dispatch_single(host, session, message).await,
        Incoming::Batch(messages) if messages.is_empty() => {
            let error = RpcError::invalid_request("an empty batch is not a request")
                .with_action("put at least one request in the batch, or send a single request");
            session.respond(encode_error(None, &error)).await;
        }
        Incoming::Batch(messages) => dispatch_batch(host, session, messages).await,
    }
}

fn in_order(host: &dyn Serving, method: &str) -> bool {
    host.method(method)
        .is_some_and(|(_, scheduling)| scheduling == Scheduling::InOrder)
}

async fn dispatch_single(host: &Arc<dyn Serving>, session: &Arc<Session>, message: Message) {
    let (id, method, params) = match message {
        Message::Response => return,
        Message::Invalid { id, error } => {
            session.respond(encode_error(id.as_ref(), &error)).await;
            return;
        }
        Message::Request(r) => (Some(r.id), r.method, r.params),
        Message::Notification(n) => (None, n.method, n.params),
    };
    if in_order(host.as_ref(), &method) {
        let (response, after) = execute(host, session, id.as_ref(), &method, params).await;
        deliver(session, response, after).await;
        return;
    }
    let Ok(permit) = Arc::clone(&session.slots).acquire_owned().await else {
        return;
    };
    // Registered before the handler is spawned, so that a `$/cancelRequest`
    // read right after this frame finds it.
    let cancel = id.as_ref().map(|id| session.track_request(id));
    let (host, session) = (Arc::clone(host), Arc::clone(session));
    session.clone().life.handlers.spawn(async move {
        let (response, after) =
            execute_cancellable(&host, &session, id, cancel, &method, params, 0).await;
        if let Some(reply) = &response {
            host.reply_sizes().record(&method, reply.len());
        }
        deliver(&session, response, after).await;
        drop(permit);
    });
}

/// The error that answers a batch's calls once its replies fill the budget.
fn batch_over_budget(limit: usize) -> RpcError {
    RpcError::new(
        ErrorCode::RATE_LIMITED,
        format!(
            "not run: this batch's replies reached the connection's reply budget of {limit} bytes (limits.max_reply_bytes_in_flight)"
        ),
    )
    .with_action("send the calls that were not run again, in smaller batches or one at a time, reading the replies as they come")
}

async fn dispatch_batch(host: &Arc<dyn Serving>, session: &Arc<Session>, messages: Vec<Message>) {
    let ordered = messages.iter().any(|m| match m {
        Message::Request(r) => in_order(host.as_ref(), &r.method),
        Message::Notification(n) => in_order(host.as_ref(), &n.method),
        _ => false,
    });
    let tokens: Vec<Option<CancellationToken>> = messages
        .iter()
        .map(|m| match m {
            Message::Request(r) => Some(session.track_request(&r.id)),
            _ => None,
        })
        .collect();
    let handlers = session.life.handlers.clone();
    let slots = Arc::clone(&session.slots);
    let (host, session) = (Arc::clone(host), Arc::clone(session));
    let work = async move {
        let mut responses = Vec::new();
        let mut after_all = Vec::new();
        // The batch's replies so far, counted in the reply budget together.
        let mut kept = 0usize;
        let limit = session.replies.limit();
        for (message, cancel) in messages.into_iter().zip(tokens) {
            let (response, after) = match message {
                Message::Response => continue,
                Message::Invalid { id, error } => {
                    (Some(encode_error(id.as_ref(), &error)), Vec::new())
                }
                Message::Request(r) => {
                    let expected = host.reply_sizes().get(&r.method).unwrap_or(0);
                    if kept > 0 && kept + expected > limit {
                        session.inflight.lock().remove(&r.id);
                        let error = batch_over_budget(limit);
                        (Some(encode_error(Some(&r.id), &error)), Vec::new())
                    } else {
                        let out = execute_cancellable(
                            &host,
                            &session,
                            Some(r.id),
                            cancel,
                            &r.method,
                            r.params,
                            kept,
                        )
                        .await;
                        if let Some(reply) = &out.0 {
                            host.reply_sizes().record(&r.method, reply.len());
                        }
                        out
                    }
                }
                Message::Notification(n) => {
                    execute(&host, &session, None, &n.method, n.params).await
                }
            };
            if let Some(reply) = &response {
                kept += reply.len();
                session.replies.produced(reply.len());
            }
            responses.extend(response);
            after_all.extend(after);
        }
        // A batch of notifications only gets no reply at all.
        let reply = (!responses.is_empty()).then(|| encode_batch(&responses));
        drop(responses);
        session.replies.taken(kept);
        deliver(&session, reply, after_all).await;
    };
    if ordered {
        work.await;
    } else if let Ok(permit) = slots.acquire_owned().await {
        handlers.spawn(async move {
            work.await;
            drop(permit);
        });
    }
}

async fn deliver(session: &Session, response: Option<Bytes>, after: AfterReply) {
    if let Some(response) = response {
        session.respond(response).await;
    }
    for f in after {
        f();
    }
}

/// Runs a request so that `$/cancelRequest` can end it (`cancel` comes from
/// `Session::track_request`), once the reply budget has room for what its
/// method's replies take (`own`: reply bytes the caller holds already).
async fn execute_cancellable(
    host: &Arc<dyn Serving>,
    session: &Arc<Session>,
    id: Option<Id>,
    cancel: Option<CancellationToken>,
    method: &str,
    params: Option<Box<RawValue>>,
    own: usize,
) -> (Option<Bytes>, AfterReply) {
    let (Some(id), Some(token)) = (id, cancel) else {
        return execute(host, session, None, method, params).await;
    };
    let run = async {
        let _room = session
            .replies
            .reserve(method, || host.reply_sizes().get(method), own)
            .await;
        execute(host, session, Some(&id), method, params).await
    };
    let out = tokio::select! {
        out = run => out,
        _ = token.cancelled() => (Some(encode_error(Some(&id), &RpcError::cancelled())), Vec::new()),
    };
    session.inflight.lock().remove(&id);
    out
}

/// Runs one call: looks the method up, checks access, decodes, handles, encodes.
async fn execute(
    host: &Arc<dyn Serving>,
    session: &Arc<Session>,
    id: Option<&Id>,
    method: &str,
    params: Option<Box<RawValue>>,
) -> (Option<Bytes>, AfterReply) {
    let reply_error = |error: &RpcError| id.map(|id| encode_error(Some(id), error));
    let Some((access, _)) = host.method(method) else {
        // Notifications of unknown methods are dropped, as JSON-RPC and LSP's `$/` rule say.
        return (reply_error(&RpcError::method_not_found(method)), Vec::new());
    };
    if let Err(error) = check_access(host.as_ref(), session, method, access) {
        return (reply_error(&error), Vec::new());
    }
    let (result, after) = Arc::clone(host)
        .call(Arc::clone(session), method, params)
        .await;
    if let Err(error) = &result
        && error.code == ErrorCode::INTERNAL_ERROR
    {
        tracing::error!(method, error = %error.message, "internal error");
    }
    let response = id.map(|id| match &result {
        Ok(raw) => encode_result(id, raw),
        Err(error) => encode_error(Some(id), error),
    });
    (response, after)
}

fn check_access(
    host: &dyn Serving,
    session: &Session,
    method: &str,
    access: Access,
) -> Result<(), RpcError> {
    if session.lifecycle() == Lifecycle::ShuttingDown && method != "exit" {
        return Err(RpcError::invalid_request(
            "the session is shutting down: only `exit` may follow `shutdown`",
        )
        .with_action("send `exit` to end the session, then connect again to go on"));
    }
    let scope = match access {
        Access::Open => return Ok(()),
        Access::Scope(scope) => scope,
        Access::Owner => Scope::Admin,
    };
    let principal = session.principal();
    if !principal.is_authenticated() {
        // Not a failed authentication: no credential was presented.
        return Err(RpcError::new(
            ErrorCode::UNAUTHORIZED,
            format!("`{method}` needs an authenticated connection: call `initialize` with a paired device's `auth` first"),
        )
        .with_action("pair this device (run `openwork-host pair` on the host), then initialize with the deviceId and token it issued"));
    }
    if access == Access::Owner && !host.owner_may_act(&principal) {
        return Err(RpcError::new(
            ErrorCode::FORBIDDEN,
            format!("`{method}` is for the host's owner, on the host itself"),
        )
        .with_data("scope", Scope::Admin.as_str().into())
        .with_action("run it on the host (`openwork-host devices …` or `openwork-host pair`), or set [devices] remote_admin = true for devices with the admin scope"));
    }
    if !principal.has(scope) {
        return Err(RpcError::new(
            ErrorCode::FORBIDDEN,
            format!("`{method}` needs the `{scope}` scope, which this device was not granted"),
        )
        .with_data("scope", scope.as_str().into())
        .with_action(format!(
            "ask the host's owner to pair this device again with the `{scope}` scope"
        )));
    }
    Ok(())
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: FrameWriter<W>,
    outbound: Outbound,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let Outbound {
        mut responses,
        mut notifications,
        replies,
    } = outbound;
    // A reply leaves the budget once the transport has taken it.
    let next_ready = |responses: &mut mpsc::Receiver<Bytes>,
                      notifications: &mut mpsc::Receiver<Bytes>| {
        match responses.try_recv() {
            Ok(frame) => Some((frame, true)),
            Err(_) => notifications.try_recv().ok().map(|frame| (frame, false)),
        }
    };
    loop {
        let (frame, reply) = tokio::select! {
            biased;
            Some(frame) = responses.recv() => (frame, true),
            Some(frame) = notifications.recv() => (frame, false),
            _ = stop.cancelled() => break,
        };
        writer.write_frame(&frame).await?;
        if reply {
            replies.taken(frame.len());
        }
        // Write whatever else is ready (replies first), then flush once.
        while let Some((frame, reply)) = next_ready(&mut responses, &mut notifications) {
            writer.write_frame(&frame).await?;
            if reply {
                replies.taken(frame.len());
            }
        }
        writer.flush().await?;
    }
    while let Some((frame, reply)) = next_ready(&mut responses, &mut notifications) {
        writer.write_frame(&frame).await?;
        if reply {
            replies.taken(frame.len());
        }
    }
    writer.shutdown().await
}
