//! The SQLite store: one writer thread that batches jobs into transactions, and
//! a small pool of read connections.
//!
//! Writes go through one thread so that many small writes (log chunks) share a
//! transaction; each job learns, through its `on_commit` callback, that its
//! effect is durable. Whatever a client is sent is published from those
//! callbacks, so it is never ahead of what is committed.
//!
//! Checkpoints (copying the WAL into the database, with fsync) run on a
//! thread of their own, so the writer never waits for the disk to sync: a
//! burst of output lands in the WAL at memory speed. Only when more than
//! `MAX_WAL` is waiting does the checkpointer make the writer pause.

pub(crate) mod migrations;

use parking_lot::Mutex;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

/// The most jobs one transaction takes.
const MAX_BATCH: usize = 64;
/// Jobs queued for the writer before senders wait (a job can hold a 64 KiB chunk twice).
const QUEUE: usize = 64;
/// WAL size at which the checkpointer starts copying it into the database.
const CHECKPOINT_AT: i64 = 64 * 1024 * 1024;
/// WAL size at which the checkpointer makes the writer wait until the WAL restarts.
const MAX_WAL: i64 = 512 * 1024 * 1024;
/// WAL file size kept after a restart (the rest is truncated).
const WAL_KEEP: i64 = 64 * 1024 * 1024;
/// The page size of a new database. Log chunks are blobs of up to 64 KiB, and
/// SQLite writes the WAL a page per system call, so larger pages stream
/// faster; but each commit rewrites the last page of a table, so larger pages
/// also multiply the bytes written when commits are small. 16 KiB measured
/// best here (64 KiB: 4x the data written with one chunk per commit).
const PAGE_SIZE: i64 = 16384;
/// While log chunks keep arriving, transactions that hold only chunks are at
/// least this far apart: a burst of output shares transactions (and the WAL
/// pages they rewrite) instead of committing a page or two per 64 KiB chunk.
/// A chunk after a quiet spell, and any other job, commits at once.
const BURST_COMMIT_GAP: Duration = Duration::from_millis(1);
/// How often the writer looks for other jobs while it holds chunks back.
const BURST_POLL: Duration = Duration::from_micros(250);
/// Idle read connections kept open.
const MAX_IDLE_READERS: usize = 4;
/// How long a read waits for a lock (rare in WAL mode: while the WAL is
/// being recovered, say).
const READ_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A store failure. Cheap to clone so that one failed commit can be told to every job in it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(Arc<rusqlite::Error>),
    #[error("cannot open the database {path}: {message}")]
    Open { path: String, message: String },
    #[error(
        "host.db has schema version {found}, newer than this openwork-host knows ({known}); upgrade openwork-host"
    )]
    TooNew { found: i64, known: i64 },
    #[error("the store is closed (the host is shutting down)")]
    Closed,
    /// A read through another module failed for a reason of that module's
    /// (the store itself is fine): what was read, and why.
    #[error("cannot read {what}: {message}")]
    Read { what: &'static str, message: String },
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(Arc::new(e))
    }
}

/// Runs inside the writer's transaction.
pub(crate) type Apply = Box<dyn FnOnce(&Connection) -> rusqlite::Result<()> + Send>;
/// Told whether the job's effect was committed.
pub(crate) type OnCommit = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

struct Job {
    apply: Apply,
    /// Bytes of bulk data the job appends (log chunks); such a job is one
    /// statement, which SQLite backs out by itself when it fails, so it runs
    /// without a savepoint. Zero for ordinary jobs.
    bulk_bytes: usize,
    on_commit: OnCommit,
}

/// A handle on the store; clones share it.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    readers: Mutex<Vec<Connection>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Store {
    /// Opens (creating, owner-only) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |message: String| StoreError::Open {
            path: path.display().to_string(),
            message,
        };
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| open_err(e.to_string()))?;
        let mut conn = Connection::open(path).map_err(|e| open_err(e.to_string()))?;
        conn.pragma_update(None, "page_size", PAGE_SIZE)?;
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
        // NORMAL in WAL mode survives a crash of the process (what we guard
        // against); only an OS crash or power loss can drop the last commits.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        plan_once(&conn)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.wal_hook(Some(note_wal_frames));
        conn.pragma_update(None, "journal_size_limit", WAL_KEEP)?;
        migrations::migrate(&mut conn)?;

        let checkpointer = Checkpointer::start(path).map_err(|e| open_err(e.to_string()))?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(conn, rx, checkpointer))
            .map_err(|e| open_err(format!("cannot start the writer thread: {e}")))?;
        Ok(Store {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                jobs: Mutex::new(Some(tx)),
                readers: Mutex::new(Vec::new()),
                writer: Mutex::new(Some(writer)),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn sender(&self) -> Result<mpsc::Sender<Job>, StoreError> {
        self.inner.jobs.lock().clone().ok_or(StoreError::Closed)
    }

    /// Queues a job; `on_commit` is told when its transaction commits or fails.
    ///
    /// Waits only for room in the queue, never for the commit.
    pub async fn submit(&self, apply: Apply, on_commit: OnCommit) -> Result<(), StoreError> {
        self.enqueue(apply, 0, on_commit).await
    }

    /// Like `submit`, for the hot path: a job that appends `bytes` of bulk
    /// data in exactly one statement (so it needs no savepoint).
    pub async fn submit_append(
        &self,
        bytes: usize,
        apply: Apply,
        on_commit: OnCommit,
    ) -> Result<(), StoreError> {
        self.enqueue(apply, bytes.max(1), on_commit).await
    }

    async fn enqueue(
        &self,
        apply: Apply,
        bulk_bytes: usize,
        on_commit: OnCommit,
    ) -> Result<(), StoreError> {
        let job = Job {
            apply,
            bulk_bytes,
            on_commit,
        };
        self.sender()?
            .send(job)
            .await
            .map_err(|_| StoreError::Closed)
    }

    /// Runs `f` in the writer's transaction and returns its value once committed.
    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let slot = Arc::new(Mutex::new(None));
        let out = Arc::clone(&slot);
        let (done_tx, done_rx) = oneshot::channel();
        let apply: Apply = Box::new(move |conn| {
            let value = f(conn)?;
            *out.lock() = Some(value);
            Ok(())
        });
        let on_commit: OnCommit = Box::new(move |result| {
            let _ = done_tx.send(result);
        });
        self.submit(apply, on_commit).await?;
        done_rx.await.map_err(|_| StoreError::Closed)??;
        slot.lock().take().ok_or(StoreError::Closed)
    }

    /// Runs `f` on a read connection on the blocking pool.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.read_blocking(f))
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on a read connection on this thread.
    pub fn read_blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<T>,
    {
        let conn = match self.inner.readers.lock().pop() {
            Some(conn) => conn,
            None => self.open_reader()?,
        };
        let result = f(&conn).map_err(StoreError::from);
        let mut idle = self.inner.readers.lock();
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        result
    }

    /// Runs `f` on a read connection on this thread if no lock is in the
    /// way; `None` when one is (the caller then uses `read`, which waits).
    ///
    /// For short reads of rows written moments ago, whose pages are still
    /// in memory, from async code: there a hop to the blocking pool and back
    /// costs more than the read itself.
    pub fn read_now<T, F>(&self, f: F) -> Option<Result<T, StoreError>>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<T>,
    {
        let outcome = self.read_blocking(|conn| {
            conn.busy_timeout(Duration::ZERO)?;
            let result = f(conn);
            conn.busy_timeout(READ_BUSY_TIMEOUT)?;
            result
        });
        match outcome {
            Err(StoreError::Sqlite(e))
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) =>
            {
                None
            }
            outcome => Some(outcome),
        }
    }

    fn open_reader(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(
            &self.inner.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )?;
        conn.busy_timeout(READ_BUSY_TIMEOUT)?;
        plan_once(&conn)?;
        Ok(conn)
    }

    /// Stops the writer after it has committed everything queued.
    pub fn close(&self) {
        self.inner.jobs.lock().take();
        if let Some(writer) = self.inner.writer.lock().take() {
            let _ = writer.join();
        }
        self.inner.readers.lock().clear();
    }
}

/// Checks an existing database without a host running: opens it read-only,
/// runs SQLite's quick check, and returns its schema version.
pub(crate) fn inspect(path: &Path) -> Result<i64, StoreError> {
    let open_err = |message: String| StoreError::Open {
        path: path.display().to_string(),
        message,
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| open_err(e.to_string()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let found: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let known = migrations::MIGRATIONS.len() as i64;
    if found > known {
        return Err(StoreError::TooNew { found, known });
    }
    let verdict: String = conn.query_row("PRAGMA quick_check", [], |row| row.get(0))?;
    if verdict != "ok" {
        return Err(open_err(format!("the integrity check failed: {verdict}")));
    }
    Ok(found)
}

/// Plans each cached statement once, whatever values are bound to it later.
/// SQLite otherwise re-prepares a statement when a bound value could change
/// its plan (range bounds, with the statistics this build keeps), which made
/// every page of a log read back parse its query again.
fn plan_once(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

fn writer_loop(mut conn: Connection, mut rx: mpsc::Receiver<Job>, checkpointer: Checkpointer) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut last_commit = Instant::now();
    while let Some(job) = rx.blocking_recv() {
        batch.push(job);
        take_waiting(&mut rx, &mut batch);
        // Output streaming in: let more of it join this transaction.
        let due = last_commit + BURST_COMMIT_GAP;
        while batch.len() < MAX_BATCH && batch.iter().all(|job| job.bulk_bytes > 0) {
            let now = Instant::now();
            if now >= due {
                break;
            }
            std::thread::sleep((due - now).min(BURST_POLL));
            if !take_waiting(&mut rx, &mut batch) {
                break;
            }
        }
        run_batch(&mut conn, &mut batch);
        last_commit = Instant::now();
        let frames = WAL_FRAMES.with(std::cell::Cell::get);
        if frames > 0 {
            checkpointer.poke(frames * PAGE_SIZE >= CHECKPOINT_AT);
        }
    }
    checkpointer.stop();
    if let Err(e) = conn.pragma_update(None, "wal_checkpoint", "TRUNCATE") {
        tracing::debug!(error = %e, "final checkpoint failed");
    }
}

/// Moves the jobs already queued into `batch`, up to `MAX_BATCH`; false once
/// the queue is closed (the store is shutting down: commit what there is).
fn take_waiting(rx: &mut mpsc::Receiver<Job>, batch: &mut Vec<Job>) -> bool {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(mpsc::error::TryRecvError::Empty) => return true,
            Err(mpsc::error::TryRecvError::Disconnected) => return false,
        }
    }
    true
}

/// Copies the WAL into the database in the background.
struct Checkpointer {
    shared: Arc<(Mutex<CheckpointState>, parking_lot::Condvar)>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct CheckpointState {
    /// The WAL grew since the last checkpoint.
    dirty: bool,
    /// The WAL is large: checkpoint now rather than after a quiet second.
    urgent: bool,
    stop: bool,
}

impl CheckpointState {
    /// Records that the WAL grew; true when the checkpointer must be woken
    /// for it: it was waiting for a first commit, or the WAL just became
    /// large. While it waits out a quiet second it need not be woken for
    /// each further commit: once per commit was a wake-up per chunk of
    /// streamed output, for nothing.
    fn mark_grown(&mut self, urgent: bool) -> bool {
        let first = !self.dirty;
        self.dirty = true;
        let newly_urgent = urgent && !self.urgent;
        self.urgent |= urgent;
        first || newly_urgent
    }

    /// The checkpointer takes the work recorded so far: the next commit
    /// wakes it again.
    fn take(&mut self) {
        self.dirty = false;
        self.urgent = false;
    }
}

/// How long a small WAL waits before it is checkpointed, so that a trickle
/// of commits costs one checkpoint a second, not one each.
const QUIET: std::time::Duration = std::time::Duration::from_secs(1);

impl Checkpointer {
    fn start(path: &Path) -> Result<Checkpointer, rusqlite::Error> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        let shared = Arc::new((
            Mutex::new(CheckpointState::default()),
            parking_lot::Condvar::new(),
        ));
        let state = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || checkpoint_loop(conn, &state))
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(Checkpointer {
            shared,
            thread: Some(thread),
        })
    }

    /// Tells the checkpointer that the WAL grew; `urgent` when it is large.
    fn poke(&self, urgent: bool) {
        let (state, wake) = &*self.shared;
        if state.lock().mark_grown(urgent) {
            wake.notify_one();
        }
    }

    fn stop(mut self) {
        let (state, wake) = &*self.shared;
        state.lock().stop = true;
        wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn checkpoint_loop(conn: Connection, shared: &(Mutex<CheckpointState>, parking_lot::Condvar)) {
    let (state, wake) = shared;
    let page_size: i64 = conn
        .pragma_query_value(None, "page_size", |r| r.get(0))
        .unwrap_or(PAGE_SIZE);
    loop {
        {
            let mut s = state.lock();
            while !s.dirty && !s.stop {
                wake.wait(&mut s);
            }
            if !s.urgent && !s.stop {
                wake.wait_while_for(&mut s, |s| !s.urgent && !s.stop, QUIET);
            }
            if s.stop {
                return;
            }
            s.take();
        }
        // (busy, frames in the WAL, frames copied) after a checkpoint that never blocks the writer.
        let passive = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        let Ok((frames, copied)) = passive else {
            continue;
        };
        if frames * page_size > MAX_WAL {
            // Writers wait while the WAL is copied and restarted, so it cannot grow without bound.
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "could not restart the WAL");
            }
        } else if copied < frames {
            // Commits came in while copying: go again (this thread is the
            // one a wake-up would be for, so none is sent).
            state.lock().mark_grown(frames * page_size >= CHECKPOINT_AT);
        }
    }
}

thread_local! {
    /// Frames in the WAL after the writer's last commit (set by SQLite's WAL hook).
    static WAL_FRAMES: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

fn note_wal_frames(_: &rusqlite::hooks::Wal, frames: std::os::raw::c_int) -> rusqlite::Result<()> {
    WAL_FRAMES.with(|f| f.set(i64::from(frames)));
    Ok(())
}

fn run_batch(conn: &mut Connection, batch: &mut Vec<Job>) {
    let mut tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(e) => {
            let err = StoreError::from(e);
            for job in batch.drain(..) {
                (job.on_commit)(Err(err.clone()));
            }
            return;
        }
    };
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut queued = batch.drain(..);
    while let Some(job) = queued.next() {
        let outcome = if job.bulk_bytes > 0 {
            (job.apply)(&tx)
        } else {
            run_in_savepoint(&mut tx, job.apply)
        };
        let outcome = outcome.map_err(StoreError::from);
        if let Err(e) = &outcome
            && tx.is_autocommit()
        {
            // SQLite rolled the whole transaction back (a full disk, an I/O
            // error): nothing in it was stored, and what is left of the batch
            // must not run outside a transaction. Every job hears the cause.
            tracing::error!(error = %e, "a store transaction was rolled back");
            let done = outcomes.into_iter().map(|(_, on_commit)| on_commit);
            let rest = queued.map(|job| job.on_commit);
            for on_commit in done.chain(std::iter::once(job.on_commit)).chain(rest) {
                on_commit(Err(e.clone()));
            }
            return;
        }
        outcomes.push((outcome, job.on_commit));
    }
    let committed = tx.commit().map_err(StoreError::from);
    if let Err(e) = &committed {
        tracing::error!(error = %e, "a store transaction failed to commit");
    }
    for (outcome, on_commit) in outcomes {
        on_commit(committed.clone().and(outcome));
    }
}

fn run_in_savepoint(tx: &mut rusqlite::Transaction<'_>, apply: Apply) -> rusqlite::Result<()> {
    let sp = tx.savepoint()?;
    apply(&sp)?;
    sp.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch whose transaction SQLite rolls back part-way (here: the
    /// database is full) tells every job so, with the cause, and stores none
    /// of them: a job is told it committed exactly when its row is there.
    #[test]
    fn a_batch_rolled_back_by_sqlite_stores_nothing_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("full.db")).unwrap();
        conn.execute_batch("CREATE TABLE t (n INTEGER, b BLOB)")
            .unwrap();
        let pages: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        conn.pragma_update(None, "max_page_count", pages + 4)
            .unwrap();
        let told = Arc::new(std::sync::Mutex::new(Vec::new()));
        let job = |n: i64, blob: usize, bulk: bool| {
            let told = Arc::clone(&told);
            Job {
                apply: Box::new(move |c: &Connection| {
                    c.execute("INSERT INTO t VALUES (?1, zeroblob(?2))", (n, blob as i64))
                        .map(|_| ())
                }),
                bulk_bytes: usize::from(bulk),
                on_commit: Box::new(move |r: Result<(), StoreError>| {
                    told.lock().unwrap().push((n, r.map_err(|e| e.to_string())));
                }),
            }
        };
        let mut batch = vec![
            job(1, 10, false),
            job(2, 10, true),
            job(3, 1 << 20, true),
            job(4, 10, false),
            job(5, 10, true),
        ];
        run_batch(&mut conn, &mut batch);
        let told = told.lock().unwrap().clone();
        assert_eq!(told.len(), 5, "every job is told: {told:?}");
        let stored: Vec<i64> = conn
            .prepare("SELECT n FROM t ORDER BY n")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for (n, result) in &told {
            assert_eq!(
                result.is_ok(),
                stored.contains(n),
                "job {n}: {result:?}, stored {stored:?}"
            );
            if let Err(e) = result {
                assert!(!e.contains("no transaction is active"), "job {n}: {e}");
            }
        }
        assert!(
            told.iter()
                .any(|(_, r)| r.as_ref().is_err_and(|e| e.contains("full"))),
            "{told:?}"
        );
    }

    #[tokio::test]
    async fn committed_data_reaches_the_database_file_after_each_quiet_second() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = Store::open(&path).unwrap();
        store
            .write(|c| c.execute("CREATE TABLE blobs (b BLOB)", []).map(|_| ()))
            .await
            .unwrap();
        let file_len = || std::fs::metadata(&path).unwrap().len();
        // Twice: the second time checks the checkpointer is woken again once
        // it has taken the first round of work.
        for round in 1..=2u64 {
            let before = file_len();
            // Several commits, as streamed output makes them: only the WAL grows.
            for _ in 0..8 {
                store
                    .write(|c| {
                        c.execute("INSERT INTO blobs VALUES (randomblob(256 * 1024))", [])
                            .map(|_| ())
                    })
                    .await
                    .unwrap();
            }
            let deadline = Instant::now() + Duration::from_secs(15);
            while file_len() < before + 2 * 1024 * 1024 {
                assert!(
                    Instant::now() < deadline,
                    "round {round}: the WAL was not checkpointed into the database ({} bytes, {before} before)",
                    file_len()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        store.close();
    }

    #[test]
    fn the_checkpointer_is_woken_once_per_checkpoint_not_once_per_commit() {
        let mut s = CheckpointState::default();
        // The first commit wakes it to start its quiet second.
        assert!(s.mark_grown(false));
        // More small commits meanwhile change nothing it waits for.
        assert!(!s.mark_grown(false));
        assert!(!s.mark_grown(false));
        // The WAL turning large ends the quiet wait, once.
        assert!(s.mark_grown(true));
        assert!(!s.mark_grown(true));
        assert!(!s.mark_grown(false));
        assert!(s.dirty && s.urgent);
        // Once it has taken the work, the next commit wakes it again.
        s.take();
        assert!(!s.dirty && !s.urgent);
        assert!(s.mark_grown(false));
        // Large from the start: the first commit is enough.
        let mut s = CheckpointState::default();
        assert!(s.mark_grown(true));
        assert!(!s.mark_grown(true));
    }

    #[tokio::test]
    async fn a_read_now_gives_way_to_a_lock_instead_of_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        store
            .write(|c| c.execute("INSERT INTO counters VALUES ('a', 7)", []))
            .await
            .unwrap();
        let busy_timeout =
            |c: &Connection| c.pragma_query_value(None, "busy_timeout", |r| r.get::<_, i64>(0));
        // It reads, and while it does, SQLite is told not to wait for locks.
        let (value, waits): (i64, i64) = store
            .read_now(|c| {
                let value = c.query_row("SELECT value FROM counters", [], |r| r.get(0))?;
                Ok((value, busy_timeout(c)?))
            })
            .unwrap()
            .unwrap();
        assert_eq!((value, waits), (7, 0));
        // A lock in the way: no answer, so that the caller reads the way that waits.
        let locked = store.read_now(|_| -> rusqlite::Result<()> {
            Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                None,
            ))
        });
        assert!(locked.is_none());
        // Any other failure is the caller's to see.
        let failed = store.read_now(|c| c.execute("INSERT INTO counters VALUES ('b', 1)", []));
        assert!(matches!(failed, Some(Err(_))));
        // The connections went back to the pool waiting for locks as before.
        let waits = store.read(busy_timeout).await.unwrap();
        assert_eq!(waits, READ_BUSY_TIMEOUT.as_millis() as i64);
        store.close();
    }

    #[tokio::test]
    async fn a_failing_job_does_not_undo_its_neighbours() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        let ok1 = store.write(|c| c.execute("INSERT INTO counters VALUES ('a', 1)", []));
        let bad = store.write(|c| {
            c.execute("INSERT INTO counters VALUES ('b', 1)", [])?;
            c.execute("INSERT INTO counters VALUES ('a', 2)", [])
        });
        let ok2 = store.write(|c| c.execute("INSERT INTO counters VALUES ('c', 1)", []));
        let (r1, r2, r3) = tokio::join!(ok1, bad, ok2);
        assert!(r1.is_ok() && r3.is_ok());
        assert!(r2.is_err());
        let names: Vec<String> = store
            .read(|c| {
                let mut st = c.prepare("SELECT name FROM counters ORDER BY name")?;
                st.query_map([], |r| r.get(0))?.collect()
            })
            .await
            .unwrap();
        assert_eq!(names, ["a", "c"]);
        store.close();
        assert!(matches!(
            store.write(|_| Ok(())).await,
            Err(StoreError::Closed)
        ));
    }

    #[test]
    fn the_database_file_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = Store::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        store.close();
    }
}
