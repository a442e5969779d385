//! What subscribers see of a task: its committed chunks and status changes, in
//! order, and the feed that replays them from any seq and then follows live.
//!
//! Only the store writer publishes here, from its commit callbacks, so nothing
//! reaches a subscriber before it is committed. A short window of recent
//! chunks stays in memory for subscribers that keep up; one that falls behind
//! reads from the store instead, so a slow client never grows host memory.

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::chunk::encode_log_chunk;
use super::records;
use crate::clock;
use crate::protocol::{LogStream, TaskStatus, TaskUpdate};
use crate::rpc::notifications;
use crate::store::{Store, StoreError};

/// Bytes of recent encoded chunks kept per task for live subscribers.
const RECENT_BYTES: usize = 4 * 1024 * 1024;
/// Chunks a lagging subscriber reads from the store at once, and the bytes
/// of output after which a page stops early (kept small enough to stay in
/// the CPU's cache on its way to the socket, and to read in a few dozen
/// microseconds where it is read in place; see `HOT_MS`).
const PAGE_CHUNKS: u32 = 64;
const PAGE_BYTES: usize = 256 * 1024;
/// A subscriber whose last page from the store held output written this
/// recently (in ms) reads the next one in place, on its own thread: those
/// rows are still in memory, and the read costs less than the hop to the
/// blocking pool and back (measured: a tenth of the host's CPU while
/// streaming). Anything older, or a database lock, goes through the pool.
const HOT_MS: i64 = 2_000;

/// A task as its subscribers see it.
pub struct TaskLive {
    pub task_id: String,
    /// The task's row in the store.
    pub rowid: i64,
    /// Cancels the task (used by `task.cancel`).
    pub cancel: CancellationToken,
    state: Mutex<LiveState>,
    version: watch::Sender<u64>,
}

struct LiveState {
    committed_seq: u64,
    status: TaskStatus,
    transitions: Vec<Transition>,
    /// Permission requests waiting for an answer: (request id, `permission.request` frame).
    pending_permissions: Vec<(String, Bytes)>,
    recent: VecDeque<Arc<RecentChunk>>,
    recent_bytes: usize,
    store_error: Option<StoreError>,
}

struct Transition {
    /// The last chunk committed before the status changed.
    after_seq: u64,
    frame: Bytes,
    audience: Audience,
}

/// Who a feed item is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Everyone following the task.
    Everyone,
    /// Followers who may answer permission requests, but for this connection
    /// (the one that answered already knows).
    PermissionHolders { except: Option<u64> },
}

/// One notification from a feed, and who should get it.
#[derive(Debug, Clone)]
pub struct FeedItem {
    pub frame: Bytes,
    pub audience: Audience,
}

/// A committed chunk kept in memory; encoded on first use, once for all subscribers.
struct RecentChunk {
    seq: u64,
    stream: LogStream,
    ts: i64,
    data: Bytes,
    frame: OnceLock<Bytes>,
}

impl RecentChunk {
    fn frame(&self, task_id: &str) -> Bytes {
        self.frame
            .get_or_init(|| encode_log_chunk(task_id, self.seq, self.stream, &self.data, self.ts))
            .clone()
    }
}

impl TaskLive {
    /// A task that is starting: no chunks, status `queued`.
    pub fn new(task_id: String, rowid: i64) -> Arc<TaskLive> {
        Self::with_state(task_id, rowid, 0, TaskStatus::Queued, Vec::new())
    }

    /// A task that has ended, rebuilt from the store for replay.
    pub fn finished(update: &TaskUpdate, rowid: i64, last_seq: u64) -> Arc<TaskLive> {
        let transition = Transition {
            after_seq: last_seq,
            frame: notifications::TASK_UPDATED.encode(update),
            audience: Audience::Everyone,
        };
        Self::with_state(
            update.task_id.clone(),
            rowid,
            last_seq,
            update.status,
            vec![transition],
        )
    }

    fn with_state(
        task_id: String,
        rowid: i64,
        committed_seq: u64,
        status: TaskStatus,
        transitions: Vec<Transition>,
    ) -> Arc<TaskLive> {
        Arc::new(TaskLive {
            task_id,
            rowid,
            cancel: CancellationToken::new(),
            state: Mutex::new(LiveState {
                committed_seq,
                status,
                transitions,
                pending_permissions: Vec::new(),
                recent: VecDeque::new(),
                recent_bytes: 0,
                store_error: None,
            }),
            version: watch::Sender::new(0),
        })
    }

    /// The status as last committed.
    pub fn status(&self) -> TaskStatus {
        self.state.lock().status
    }

    /// The status and last committed seq, read together.
    pub fn snapshot(&self) -> (TaskStatus, u64) {
        let s = self.state.lock();
        (s.status, s.committed_seq)
    }

    /// The last committed seq.
    pub fn committed_seq(&self) -> u64 {
        self.state.lock().committed_seq
    }

    /// A store failure seen while saving output, if any.
    pub fn store_error(&self) -> Option<StoreError> {
        self.state.lock().store_error.clone()
    }

    /// Called by the store writer once a chunk is committed.
    pub(super) fn publish_chunk(&self, seq: u64, stream: LogStream, ts: i64, data: Bytes) {
        {
            let mut s = self.state.lock();
            s.committed_seq = s.committed_seq.max(seq);
            s.recent_bytes += data.len();
            s.recent.push_back(Arc::new(RecentChunk {
                seq,
                stream,
                ts,
                data,
                frame: OnceLock::new(),
            }));
            while s.recent_bytes > RECENT_BYTES && s.recent.len() > 1 {
                if let Some(old) = s.recent.pop_front() {
                    s.recent_bytes -= old.data.len();
                }
            }
        }
        self.version.send_modify(|v| *v += 1);
    }

    /// Called by the store writer once a status change is committed.
    pub(super) fn publish_transition(&self, update: &TaskUpdate) {
        {
            let mut s = self.state.lock();
            let after_seq = s.committed_seq;
            s.status = update.status;
            s.transitions.push(Transition {
                after_seq,
                frame: notifications::TASK_UPDATED.encode(update),
                audience: Audience::Everyone,
            });
            if update.status.is_final() {
                // Live subscribers are caught up or will read the store.
                s.recent.clear();
                s.recent_bytes = 0;
            }
        }
        self.version.send_modify(|v| *v += 1);
    }

    /// A permission request for this task, sent to its followers in order.
    pub(super) fn publish_permission_request(&self, request_id: &str, frame: Bytes) {
        {
            let mut s = self.state.lock();
            let after_seq = s.committed_seq;
            s.pending_permissions
                .push((request_id.to_owned(), frame.clone()));
            s.transitions.push(Transition {
                after_seq,
                frame,
                audience: Audience::PermissionHolders { except: None },
            });
        }
        self.version.send_modify(|v| *v += 1);
    }

    /// A permission request was answered (or expired); `except` is the
    /// connection that answered.
    pub(super) fn publish_permission_resolved(
        &self,
        request_id: &str,
        frame: Bytes,
        except: Option<u64>,
    ) {
        {
            let mut s = self.state.lock();
            let after_seq = s.committed_seq;
            s.pending_permissions.retain(|(id, _)| id != request_id);
            s.transitions.push(Transition {
                after_seq,
                frame,
                audience: Audience::PermissionHolders { except },
            });
        }
        self.version.send_modify(|v| *v += 1);
    }

    /// Called by the store writer when a write failed.
    pub(super) fn publish_store_error(&self, error: StoreError) {
        self.state.lock().store_error.get_or_insert(error);
        self.version.send_modify(|v| *v += 1);
    }

    /// Waits until the task has reached a final status.
    pub async fn wait_final(&self) -> TaskStatus {
        let mut rx = self.version.subscribe();
        loop {
            rx.borrow_and_update();
            let status = self.status();
            if status.is_final() {
                return status;
            }
            if rx.changed().await.is_err() {
                return self.status();
            }
        }
    }
}

/// One subscriber's cursor over a task: yields encoded `log.chunk` and
/// `task.updated` notifications in order, and ends after the final status.
pub struct Feed {
    live: Arc<TaskLive>,
    store: Store,
    rx: watch::Receiver<u64>,
    next_seq: u64,
    next_transition: usize,
    page: VecDeque<(u64, Bytes)>,
    /// Whether the last page read held output written within `HOT_MS`.
    hot: bool,
    /// Permission requests pending when the feed began, sent first.
    initial: VecDeque<FeedItem>,
}

/// Where a new feed starts.
pub struct FeedStart {
    pub from_seq: u64,
    pub last_seq: u64,
    pub status: TaskStatus,
}

enum Step {
    Emit(FeedItem),
    EmitRecent(Arc<RecentChunk>),
    ReadStore { upto: u64 },
    Wait,
    End,
}

impl Feed {
    /// A feed from `from_seq` (1 when absent; capped at the last seq + 1).
    ///
    /// Status changes from now on are sent; a task that has already ended
    /// gets its final `task.updated` after the replay, as an end marker.
    pub fn new(live: Arc<TaskLive>, store: Store, from_seq: Option<u64>) -> (Feed, FeedStart) {
        let rx = live.version.subscribe();
        let (start, next_transition, initial) = {
            let s = live.state.lock();
            let initial = s
                .pending_permissions
                .iter()
                .map(|(_, frame)| FeedItem {
                    frame: frame.clone(),
                    audience: Audience::PermissionHolders { except: None },
                })
                .collect();
            let next_seq = from_seq.unwrap_or(1).clamp(1, s.committed_seq + 1);
            let next_transition = if s.status.is_final() {
                s.transitions.len().saturating_sub(1)
            } else {
                s.transitions.len()
            };
            (
                FeedStart {
                    from_seq: next_seq,
                    last_seq: s.committed_seq,
                    status: s.status,
                },
                next_transition,
                initial,
            )
        };
        let feed = Feed {
            live,
            store,
            rx,
            next_seq: start.from_seq,
            next_transition,
            page: VecDeque::new(),
            hot: false,
            initial,
        };
        (feed, start)
    }

    /// The next notification, or `None` once the task has ended and all is sent.
    pub async fn next(&mut self) -> Result<Option<FeedItem>, StoreError> {
        if let Some(item) = self.initial.pop_front() {
            return Ok(Some(item));
        }
        loop {
            match self.step() {
                Step::Emit(item) => return Ok(Some(item)),
                // Encoded outside the lock: the writer publishes while we encode.
                Step::EmitRecent(chunk) => {
                    return Ok(Some(FeedItem {
                        frame: chunk.frame(&self.live.task_id),
                        audience: Audience::Everyone,
                    }));
                }
                Step::End => return Ok(None),
                Step::ReadStore { upto } => self.read_page(upto).await?,
                Step::Wait => {
                    if self.rx.changed().await.is_err() {
                        return Ok(None);
                    }
                }
            }
        }
    }

    fn step(&mut self) -> Step {
        // Mark the version seen before looking, so a publish after this point wakes `changed`.
        self.rx.borrow_and_update();
        let s = self.live.state.lock();
        if let Some(t) = s.transitions.get(self.next_transition)
            && t.after_seq < self.next_seq
        {
            self.next_transition += 1;
            return Step::Emit(FeedItem {
                frame: t.frame.clone(),
                audience: t.audience,
            });
        }
        if self.next_seq <= s.committed_seq {
            while let Some((seq, _)) = self.page.front() {
                if *seq < self.next_seq {
                    self.page.pop_front();
                } else {
                    break;
                }
            }
            if let Some((seq, frame)) = self.page.front()
                && *seq == self.next_seq
            {
                let frame = frame.clone();
                self.page.pop_front();
                self.next_seq += 1;
                return Step::Emit(FeedItem {
                    frame,
                    audience: Audience::Everyone,
                });
            }
            if let Some(front) = s.recent.front()
                && front.seq <= self.next_seq
            {
                let index = (self.next_seq - front.seq) as usize;
                if let Some(chunk) = s.recent.get(index)
                    && chunk.seq == self.next_seq
                {
                    self.next_seq += 1;
                    return Step::EmitRecent(Arc::clone(chunk));
                }
            }
            return Step::ReadStore {
                upto: s.committed_seq,
            };
        }
        if s.status.is_final() && self.next_transition >= s.transitions.len() {
            Step::End
        } else {
            Step::Wait
        }
    }

    async fn read_page(&mut self, upto: u64) -> Result<(), StoreError> {
        let (rowid, from) = (self.live.rowid, self.next_seq);
        let read = |task_id: String| {
            // Encoded where it is read, from the decoder's buffer: a lagging
            // subscriber costs no allocation per chunk beyond its frame.
            move |conn: &rusqlite::Connection| {
                let mut page = Page::default();
                records::visit_chunks(conn, rowid, from, upto, PAGE_CHUNKS, PAGE_BYTES, |c| {
                    page.frames.push_back((
                        c.seq,
                        encode_log_chunk(&task_id, c.seq, c.stream, c.data, c.ts),
                    ));
                    page.newest_ts = page.newest_ts.max(c.ts);
                })?;
                Ok(page)
            }
        };
        let in_place = match self.hot {
            true => self.store.read_now(read(self.live.task_id.clone())),
            false => None,
        };
        let page = match in_place {
            Some(page) => page?,
            None => self.store.read(read(self.live.task_id.clone())).await?,
        };
        match page.frames.front() {
            // A chunk whose write failed leaves a gap: skip it rather than wait forever.
            Some((first, _)) if *first > self.next_seq => self.next_seq = *first,
            Some(_) => {}
            None => self.next_seq = upto + 1,
        }
        if !page.frames.is_empty() {
            self.hot = page.newest_ts >= clock::now_ms() - HOT_MS;
        }
        self.page = page.frames;
        Ok(())
    }
}

/// Chunks read back from the store, encoded.
#[derive(Default)]
struct Page {
    frames: VecDeque<(u64, Bytes)>,
    /// When the newest of them was written (ms since the epoch).
    newest_ts: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::execution::records::{NewTask, insert_chunk, insert_task};
    use crate::execution::stored::Compressor;

    /// A finished task whose chunks were written at `ts`, each a page's worth
    /// of output, and a feed over it from the start.
    async fn finished_task(store: &Store, chunks: u64, ts: i64) -> Feed {
        let rowid = store
            .write(move |c| {
                let rowid = insert_task(
                    c,
                    &NewTask {
                        id: "t_feed".into(),
                        runtime: "builtin".into(),
                        title: None,
                        argv: None,
                        command: Some("true".into()),
                        cwd: "/".into(),
                        timeout_s: None,
                        created_by: "test".into(),
                        idempotency_key: None,
                        request_hash: None,
                        created_at: ts,
                        prompt: None,
                        session_id: None,
                        model: None,
                        agent: None,
                    },
                )?;
                let mut compressor = Compressor::new();
                for seq in 1..=chunks {
                    let data = Bytes::from(format!("line {seq}\n").repeat(PAGE_BYTES / 8));
                    let stored = compressor.encode(&data);
                    insert_chunk(c, rowid, seq, LogStream::Stdout, ts, &stored)?;
                }
                Ok(rowid)
            })
            .await
            .unwrap();
        let update = TaskUpdate {
            task_id: "t_feed".into(),
            status: TaskStatus::Succeeded,
            exit_code: Some(0),
            signal: None,
            error: None,
        };
        let live = TaskLive::finished(&update, rowid, chunks);
        Feed::new(live, store.clone(), Some(1)).0
    }

    /// Every notification of the feed, and whether it ended reading in place.
    async fn drain(mut feed: Feed) -> (Vec<serde_json::Value>, bool) {
        let mut out = Vec::new();
        while let Some(item) = feed.next().await.unwrap() {
            out.push(serde_json::from_slice(&item.frame).unwrap());
        }
        (out, feed.hot)
    }

    #[tokio::test]
    async fn recent_output_is_read_back_in_place_and_old_output_through_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        for (ts, in_place) in [(clock::now_ms(), true), (clock::now_ms() - 60_000, false)] {
            let feed = finished_task(&store, 5, ts).await;
            let (notes, hot) = drain(feed).await;
            assert_eq!(hot, in_place, "output written at {ts}");
            // Either way: every chunk once, in order, then the final status.
            let seqs: Vec<u64> = notes[..5]
                .iter()
                .map(|n| n["params"]["seq"].as_u64().unwrap())
                .collect();
            assert_eq!(seqs, [1, 2, 3, 4, 5]);
            for note in &notes[..5] {
                let seq = note["params"]["seq"].as_u64().unwrap();
                let want = format!("line {seq}\n").repeat(PAGE_BYTES / 8);
                assert_eq!(note["params"]["data"], want.as_str());
            }
            assert_eq!(notes[5]["method"], "task.updated");
            assert_eq!(notes.len(), 6);
            store
                .write(|c| c.execute("DELETE FROM log_chunks", []).map(|_| ()))
                .await
                .unwrap();
            store
                .write(|c| c.execute("DELETE FROM tasks", []).map(|_| ()))
                .await
                .unwrap();
        }
        store.close();
    }
}
