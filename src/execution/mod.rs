//! What a running task is, for every runtime: its live state and feed, the
//! sink it writes output and statuses through, how it ended, its rows in the
//! store, and the guard that ends its processes if the host dies.
//!
//! A leaf: the task manager (`crate::tasks`), the permissions and both
//! runtimes (the built-in runner and OpenCode) depend on it; it depends on
//! none of them.

pub mod chunk;
pub(crate) mod live;
pub mod reaper;
pub(crate) mod records;
pub(crate) mod sink;
pub(crate) mod stored;

use crate::clock;
use crate::protocol::TaskStatus;
pub use live::{Audience, Feed, FeedItem, FeedStart, TaskLive};
pub(crate) use records::StatusChange;
pub(crate) use sink::Sink;

/// How a task ended.
pub(crate) struct Outcome {
    pub status: TaskStatus,
    pub change: StatusChange,
}

impl Outcome {
    /// A task that ended without running (or running further), for `error`.
    pub(crate) fn ended(status: TaskStatus, error: impl Into<String>) -> Outcome {
        Outcome {
            status,
            change: StatusChange {
                error: Some(error.into()),
                finished_at: Some(clock::now_ms()),
                ..StatusChange::default()
            },
        }
    }

    pub(crate) fn failed(error: String) -> Outcome {
        Outcome {
            status: TaskStatus::Failed,
            change: StatusChange {
                error: Some(error),
                ..StatusChange::default()
            },
        }
    }
}

/// Where a task's permission requests are announced: to the people following
/// the task, in order with its other notifications. `crate::permissions`
/// publishes through this and never reaches into a task; `TaskLive` is the
/// board every task has.
pub(crate) trait RequestBoard: Send + Sync {
    /// The task the requests are about.
    fn task_id(&self) -> &str;
    /// A request waits for an answer: its `permission.request` frame.
    fn requested(&self, request_id: &str, frame: bytes::Bytes);
    /// A request was answered, expired or withdrawn: its
    /// `permission.resolved` frame; `except` is the connection that answered.
    fn resolved(&self, request_id: &str, frame: bytes::Bytes, except: Option<u64>);
}

impl RequestBoard for TaskLive {
    fn task_id(&self) -> &str {
        &self.task_id
    }

    fn requested(&self, request_id: &str, frame: bytes::Bytes) {
        self.publish_permission_request(request_id, frame);
    }

    fn resolved(&self, request_id: &str, frame: bytes::Bytes, except: Option<u64>) {
        self.publish_permission_resolved(request_id, frame, except);
    }
}
