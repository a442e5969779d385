//! The reply budget: bytes of replies a connection has produced and its
//! client has not taken yet, and the room a call waits for before it runs.
//!
//! A reply exists in memory from the moment its call ends until the writer
//! hands it to the socket, so a client that sends calls and never reads
//! could make the host hold any amount of them. Every reply counts against
//! the connection's budget while it waits to be written (a batch's replies
//! together); the reader stops taking requests while the budget is spent.
//! That alone would not stop the calls already read from producing their
//! replies all at once, so a call also waits for room before it runs, as
//! much room as the largest reply its method has produced on this host
//! (`ReplySizes`). A method whose replies are small never waits (so a call
//! that waits for another, such as a permission answer, is never held up
//! behind a large one), and a method whose size is not known yet runs one
//! call at a time per connection until it is.

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};

use tokio::sync::Notify;

/// Replies this small never wait for room: a connection's whole request
/// budget of them is a few MiB.
pub(crate) const SMALL_REPLY: usize = 64 * 1024;
/// Methods whose reply size is remembered, at most (names are finite, but
/// `opencode.*` takes any suffix).
const SIZES_KEPT: usize = 1024;

/// The largest reply each method has produced on this host.
#[derive(Default)]
pub struct ReplySizes {
    sizes: Mutex<HashMap<String, usize>>,
}

impl ReplySizes {
    /// The largest reply `method` has produced, if it has produced one.
    pub(crate) fn get(&self, method: &str) -> Option<usize> {
        self.sizes.lock().get(method).copied()
    }

    /// Remembers a reply of `bytes` from `method`.
    pub(crate) fn record(&self, method: &str, bytes: usize) {
        let mut sizes = self.sizes.lock();
        let room = sizes.len() < SIZES_KEPT;
        match sizes.get_mut(method) {
            Some(largest) => *largest = (*largest).max(bytes),
            None if room => {
                sizes.insert(method.to_owned(), bytes);
            }
            None => {}
        }
    }
}

/// One connection's reply budget.
pub(crate) struct ReplyBudget {
    limit: usize,
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Default)]
struct State {
    /// Reply bytes in memory, not yet written.
    produced: usize,
    /// Room held by calls that are running.
    reserved: usize,
    /// Methods with a call running whose reply size is not known yet.
    discovering: HashSet<String>,
}

/// Room held by a running call; given back when dropped.
pub(crate) struct Reservation<'a> {
    budget: &'a ReplyBudget,
    bytes: usize,
    discovering: Option<String>,
}

impl ReplyBudget {
    pub(crate) fn new(limit: usize) -> ReplyBudget {
        ReplyBudget {
            limit,
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        }
    }

    /// The budget, in bytes.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Waits until `ready` holds for the state, rechecking whenever it changes.
    async fn wait_until<T>(&self, mut ready: impl FnMut(&mut State) -> Option<T>) -> T {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(out) = ready(&mut self.state.lock()) {
                return out;
            }
            notified.await;
        }
    }

    /// Waits while the replies in memory fill the budget (the reader's gate).
    pub(crate) async fn room_to_read(&self) {
        self.wait_until(|s| (s.produced < self.limit).then_some(()))
            .await
    }

    /// Whether the replies in memory fill the budget.
    #[cfg(test)]
    pub(crate) fn is_spent(&self) -> bool {
        self.state.lock().produced >= self.limit
    }

    /// A reply of `bytes` is in memory.
    pub(crate) fn produced(&self, bytes: usize) {
        self.state.lock().produced += bytes;
    }

    /// A reply of `bytes` left memory (written, or dropped).
    pub(crate) fn taken(&self, bytes: usize) {
        {
            let mut state = self.state.lock();
            state.produced = state.produced.saturating_sub(bytes);
        }
        self.changed.notify_waiters();
    }

    /// Waits for room to run a call of `method`, whose replies have been at
    /// most `expected` bytes (`None`: none seen yet). `own` is what the
    /// caller itself holds in `produced` (a batch's earlier replies), which
    /// it cannot wait for.
    pub(crate) async fn reserve(
        &self,
        method: &str,
        expected: impl Fn() -> Option<usize>,
        own: usize,
    ) -> Reservation<'_> {
        let limit = self.limit;
        self.wait_until(|state| match expected() {
            Some(bytes) if bytes <= SMALL_REPLY => {
                state.reserved += bytes;
                Some(self.reservation(bytes, None))
            }
            Some(bytes) => {
                let bytes = bytes.min(limit);
                let others = (state.produced + state.reserved).saturating_sub(own);
                (others == 0 || state.produced + state.reserved + bytes <= limit).then(|| {
                    state.reserved += bytes;
                    self.reservation(bytes, None)
                })
            }
            None => state
                .discovering
                .insert(method.to_owned())
                .then(|| self.reservation(0, Some(method.to_owned()))),
        })
        .await
    }

    fn reservation(&self, bytes: usize, discovering: Option<String>) -> Reservation<'_> {
        Reservation {
            budget: self,
            bytes,
            discovering,
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        {
            let mut state = self.budget.state.lock();
            state.reserved = state.reserved.saturating_sub(self.bytes);
            if let Some(method) = &self.discovering {
                state.discovering.remove(method);
            }
        }
        self.budget.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MIB: usize = 1024 * 1024;

    async fn blocks<F: std::future::Future>(f: F) -> bool {
        tokio::time::timeout(Duration::from_millis(50), f)
            .await
            .is_err()
    }

    #[tokio::test]
    async fn large_calls_wait_for_room_and_small_ones_never_do() {
        let budget = ReplyBudget::new(16 * MIB);
        let big = || Some(7 * MIB);
        let first = budget.reserve("task.logs", big, 0).await;
        let second = budget.reserve("task.logs", big, 0).await;
        assert!(blocks(budget.reserve("task.logs", big, 0)).await);
        assert!(!blocks(budget.reserve("permission.reply", || Some(200), 0)).await);
        drop(first);
        budget.produced(7 * MIB);
        // 7 produced + 7 reserved + 7 more is over 16.
        assert!(blocks(budget.reserve("task.logs", big, 0)).await);
        drop(second);
        let third = budget.reserve("task.logs", big, 0).await;
        drop(third);
        // A batch does not wait for its own replies.
        budget.produced(20 * MIB);
        assert!(budget.is_spent());
        assert!(blocks(budget.room_to_read()).await);
        assert!(!blocks(budget.reserve("task.logs", big, 27 * MIB)).await);
        budget.taken(27 * MIB);
        assert!(!blocks(budget.room_to_read()).await);
    }

    #[tokio::test]
    async fn a_method_of_unknown_size_runs_one_call_at_a_time() {
        let budget = ReplyBudget::new(16 * MIB);
        let first = budget.reserve("opencode.file.read", || None, 0).await;
        assert!(blocks(budget.reserve("opencode.file.read", || None, 0)).await);
        assert!(!blocks(budget.reserve("opencode.other", || None, 0)).await);
        drop(first);
        assert!(!blocks(budget.reserve("opencode.file.read", || None, 0)).await);
    }

    #[test]
    fn sizes_keep_the_largest() {
        let sizes = ReplySizes::default();
        sizes.record("a", 10);
        sizes.record("a", 5);
        assert_eq!(sizes.get("a"), Some(10));
        assert_eq!(sizes.get("b"), None);
    }
}
