//! A connection's lifecycle: the state it is in (`ConnectionState`), the
//! work it runs and the tokens that end it (`Life`), and the one path by
//! which it winds down once it reads no more (`Life::wind_down`). Also the
//! protocol's handshake state (`Lifecycle`, LSP-style), which handlers set.

use parking_lot::Mutex;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::EndReason;

/// How long in-flight calls may take to answer when a connection closes.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How long a closing connection waits for its last frames to be written.
const WRITE_GRACE: Duration = Duration::from_secs(5);

/// A connection's lifecycle, LSP-style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Before `initialize` (local connections may already call methods).
    New,
    Initialized,
    /// After `shutdown`: only `exit` is accepted.
    ShuttingDown,
}

/// Where a connection is in its life, from its first frame to its end.
/// States only ever follow one another in this order (some are skipped):
///
/// ```text
/// Open ─┬─ peer's input ended, drain_on_eof ─▶ Draining ─▶ Closing ─▶ Stopping ─▶ Flushing ─▶ Closed
///       ├─ any other end ───────────────────────────────▶ Closing ─┘
///       └─ cut off (revoked) ─────────────────────────────────────▶ Stopping
/// ```
///
/// Who is calling (the principal) and where the protocol's handshake is
/// (`Lifecycle`) are not part of it: they change while the connection is
/// `Open`, and are still read while it winds down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Reading frames and running calls.
    Open,
    /// The peer's input ended on a connection that keeps delivering
    /// (`drain_on_eof`: a script piping requests into `stdio`): calls answer
    /// and followed tasks deliver until they end, the connection is closed
    /// or the host begins to shut down.
    Draining,
    /// Nothing more is read. Calls in flight get `CLOSE_GRACE` to answer;
    /// while the host shuts down (`host_shutdown`), calls and followed tasks
    /// get `WRITE_GRACE`, so that the final status of tasks being stopped
    /// reaches the client.
    Closing { host_shutdown: bool },
    /// Whatever still runs for the connection (subscriptions, calls) is
    /// cancelled and gets `CLOSE_GRACE` to unwind. A cut-off connection
    /// comes here at once: everything was cancelled already.
    Stopping,
    /// The writer writes what is queued (nothing, after a cut-off) and
    /// stops, within `WRITE_GRACE`.
    Flushing,
    /// Over.
    Closed,
}

impl ConnectionState {
    /// Where a state stands in the order above.
    fn rank(self) -> u8 {
        match self {
            ConnectionState::Open => 0,
            ConnectionState::Draining => 1,
            ConnectionState::Closing { .. } => 2,
            ConnectionState::Stopping => 3,
            ConnectionState::Flushing => 4,
            ConnectionState::Closed => 5,
        }
    }
}

/// A connection's lifecycle: its state, the work it runs and the tokens
/// that end that work.
pub(super) struct Life {
    state: Mutex<ConnectionState>,
    close_reason: Mutex<Option<String>>,
    /// Calls being handled.
    pub(super) handlers: TaskTracker,
    /// Subscriptions and other notifiers.
    pub(super) forwarders: TaskTracker,
    /// Ends subscriptions and notifiers.
    forwarding: CancellationToken,
    /// Ends the connection.
    close: CancellationToken,
    /// Ends every call in flight; a child of `close`.
    calls: CancellationToken,
    /// Ends the connection at once: nothing queued is written (`cut_off`).
    abort: CancellationToken,
    /// Cancelled when the peer's side ends (EOF or a read error) or the
    /// connection closes: the peer can no longer take a reply for sure.
    peer_gone: CancellationToken,
}

impl Life {
    pub(super) fn new() -> Life {
        let close = CancellationToken::new();
        Life {
            state: Mutex::new(ConnectionState::Open),
            close_reason: Mutex::new(None),
            handlers: TaskTracker::new(),
            forwarders: TaskTracker::new(),
            forwarding: CancellationToken::new(),
            calls: close.child_token(),
            close,
            abort: CancellationToken::new(),
            peer_gone: CancellationToken::new(),
        }
    }

    /// The state the connection is in.
    pub(super) fn state(&self) -> ConnectionState {
        *self.state.lock()
    }

    /// Moves to `next`, which must come after the current state.
    fn enter(&self, next: ConnectionState) {
        let mut state = self.state.lock();
        debug_assert!(
            next.rank() > state.rank(),
            "a connection went from {:?} back to {next:?}",
            *state
        );
        *state = next;
    }

    /// A token cancelled when the connection closes.
    pub(super) fn closed(&self) -> CancellationToken {
        self.close.clone()
    }

    /// Whether the connection is closing.
    pub(super) fn is_closing(&self) -> bool {
        self.close.is_cancelled()
    }

    /// Why the connection was closed, if it was.
    pub(super) fn close_reason(&self) -> Option<String> {
        self.close_reason.lock().clone()
    }

    /// A token cancelled as soon as the peer's side ends or the connection closes.
    pub(super) fn peer_gone(&self) -> CancellationToken {
        self.peer_gone.clone()
    }

    /// The peer's side has ended: it can no longer take a reply for sure.
    pub(super) fn peer_ended(&self) {
        self.peer_gone.cancel();
    }

    /// A token for a subscription or notifier: cancelled when they all end.
    pub(super) fn notifier_token(&self) -> CancellationToken {
        self.forwarding.child_token()
    }

    /// A token for a call in flight: cancelled when the calls end.
    pub(super) fn call_token(&self) -> CancellationToken {
        self.calls.child_token()
    }

    /// A token cancelled when the connection is cut off.
    pub(super) fn aborted(&self) -> CancellationToken {
        self.abort.clone()
    }

    /// Ends the connection after what is queued has been written.
    pub(super) fn close(&self, reason: String) {
        self.close_reason.lock().get_or_insert(reason);
        self.close.cancel();
    }

    /// Ends the connection at once: subscriptions stop, calls in flight are
    /// cancelled, and nothing still queued is written.
    pub(super) fn cut_off(&self, reason: String) {
        self.close_reason.lock().get_or_insert(reason);
        self.forwarding.cancel();
        self.abort.cancel();
        // Also cancels every call in flight: `calls` is its child.
        self.close.cancel();
    }

    /// Once the connection reads no more (the read loop ended for
    /// `reason`): lets calls answer and, where asked, followed tasks
    /// deliver; cancels what is left; lets the writer write what is queued
    /// (`stop_writer` tells it to finish) and ends in `Closed`. The one
    /// path by which every connection ends; `host_shutdown` is the host's
    /// shutdown token. Returns the states it went through.
    pub(super) async fn wind_down(
        &self,
        host_shutdown: &CancellationToken,
        reason: &EndReason,
        drain_on_eof: bool,
        stop_writer: CancellationToken,
        mut writer: JoinHandle<()>,
    ) -> Vec<ConnectionState> {
        self.handlers.close();
        self.forwarders.close();
        let mut path = Vec::new();
        loop {
            let next = match self.state() {
                ConnectionState::Open if self.abort.is_cancelled() => ConnectionState::Stopping,
                ConnectionState::Open if *reason == EndReason::Eof && drain_on_eof => {
                    ConnectionState::Draining
                }
                ConnectionState::Open => ConnectionState::Closing {
                    host_shutdown: host_shutdown.is_cancelled(),
                },
                ConnectionState::Draining => {
                    let shutting_down = host_shutdown.is_cancelled();
                    tokio::select! {
                        _ = self.all_done() => ConnectionState::Closing { host_shutdown: shutting_down },
                        _ = self.close.cancelled() => ConnectionState::Closing { host_shutdown: shutting_down },
                        _ = host_shutdown.cancelled() => ConnectionState::Closing { host_shutdown: true },
                    }
                }
                ConnectionState::Closing {
                    host_shutdown: true,
                } => {
                    // Tasks are being stopped: let their final status reach the client.
                    let _ = tokio::time::timeout(WRITE_GRACE, self.all_done()).await;
                    ConnectionState::Stopping
                }
                ConnectionState::Closing {
                    host_shutdown: false,
                } => {
                    let _ = tokio::time::timeout(CLOSE_GRACE, self.handlers.wait()).await;
                    ConnectionState::Stopping
                }
                ConnectionState::Stopping => {
                    self.forwarding.cancel();
                    self.calls.cancel();
                    let _ = tokio::time::timeout(CLOSE_GRACE, self.all_done()).await;
                    ConnectionState::Flushing
                }
                ConnectionState::Flushing => {
                    stop_writer.cancel();
                    if tokio::time::timeout(WRITE_GRACE, &mut writer)
                        .await
                        .is_err()
                    {
                        writer.abort();
                    }
                    ConnectionState::Closed
                }
                ConnectionState::Closed => return path,
            };
            self.enter(next);
            path.push(next);
        }
    }

    /// Resolves when every call and every subscription has ended.
    async fn all_done(&self) {
        self.handlers.wait().await;
        self.forwarders.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use ConnectionState::{Closed, Closing, Draining, Flushing, Stopping};

    /// A writer that ends when told to stop.
    fn writer() -> (CancellationToken, JoinHandle<()>) {
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move { stop.cancelled().await }
        });
        (stop, task)
    }

    /// A subscription that delivers until `done` fires, unless it is
    /// cancelled first; `delivered` says which.
    fn subscription(life: &Life) -> (tokio::sync::oneshot::Sender<()>, Arc<AtomicBool>) {
        let (done, wait) = tokio::sync::oneshot::channel::<()>();
        let delivered = Arc::new(AtomicBool::new(false));
        let (token, flag) = (life.notifier_token(), Arc::clone(&delivered));
        life.forwarders.spawn(async move {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = wait => flag.store(true, Ordering::SeqCst),
            }
        });
        (done, delivered)
    }

    /// Waits (a bounded number of turns) until `life` is in `state`.
    async fn reaches(life: &Life, state: ConnectionState) {
        for _ in 0..10_000 {
            if life.state() == state {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!(
            "the connection never reached {state:?}; it is {:?}",
            life.state()
        );
    }

    #[tokio::test]
    async fn a_cut_off_connection_cancels_its_calls_and_skips_the_graces() {
        let life = Life::new();
        let call = life.call_token();
        let (_done, delivered) = subscription(&life);
        life.handlers.spawn({
            let call = call.clone();
            async move { call.cancelled().await }
        });
        life.cut_off("revoked".into());
        let (stop, task) = writer();
        let path = life
            .wind_down(
                &CancellationToken::new(),
                &EndReason::Closed("revoked".into()),
                true,
                stop,
                task,
            )
            .await;
        assert_eq!(path, [Stopping, Flushing, Closed]);
        assert!(call.is_cancelled());
        assert!(!delivered.load(Ordering::SeqCst));
        assert_eq!(life.close_reason().as_deref(), Some("revoked"));
        assert_eq!(life.state(), Closed);
    }

    #[tokio::test]
    async fn a_piped_connection_drains_what_it_follows_after_its_input_ends() {
        let life = Arc::new(Life::new());
        let (done, delivered) = subscription(&life);
        let (stop, task) = writer();
        let winding = tokio::spawn({
            let life = Arc::clone(&life);
            async move {
                life.wind_down(&CancellationToken::new(), &EndReason::Eof, true, stop, task)
                    .await
            }
        });
        reaches(&life, Draining).await;
        done.send(()).unwrap();
        let path = winding.await.unwrap();
        assert_eq!(
            path,
            [
                Draining,
                Closing {
                    host_shutdown: false
                },
                Stopping,
                Flushing,
                Closed
            ]
        );
        assert!(
            delivered.load(Ordering::SeqCst),
            "the subscription was cut short"
        );
    }

    #[tokio::test]
    async fn a_connection_that_does_not_drain_stops_what_it_follows() {
        let life = Life::new();
        let (_done, delivered) = subscription(&life);
        let (stop, task) = writer();
        let path = life
            .wind_down(
                &CancellationToken::new(),
                &EndReason::Eof,
                false,
                stop,
                task,
            )
            .await;
        assert_eq!(
            path,
            [
                Closing {
                    host_shutdown: false
                },
                Stopping,
                Flushing,
                Closed
            ]
        );
        assert!(!delivered.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_draining_connection_closes_when_the_host_shuts_down() {
        let life = Arc::new(Life::new());
        let (_done, delivered) = subscription(&life);
        let shutdown = CancellationToken::new();
        let (stop, task) = writer();
        let winding = tokio::spawn({
            let (life, shutdown) = (Arc::clone(&life), shutdown.clone());
            async move {
                life.wind_down(&shutdown, &EndReason::Eof, true, stop, task)
                    .await
            }
        });
        reaches(&life, Draining).await;
        shutdown.cancel();
        let path = winding.await.unwrap();
        assert_eq!(
            path[..2],
            [
                Draining,
                Closing {
                    host_shutdown: true
                }
            ]
        );
        assert_eq!(path[2..], [Stopping, Flushing, Closed]);
        assert!(!delivered.load(Ordering::SeqCst));
    }
}
