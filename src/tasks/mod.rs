//! Tasks: starting, queueing, cancelling and looking up tasks, and following
//! their output. The built-in runner does the running.

pub(crate) mod runner;
pub(crate) mod tree;

// What a running task is lives in `crate::execution`; these paths stay for callers.
pub use crate::execution::{chunk, reaper};

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Principal;
use crate::clock;
use crate::config::TasksConfig;
use crate::execution::chunk::log_chunk;
use crate::execution::reaper::Reaper;
use crate::execution::records::{self, NewTask};
pub use crate::execution::{Audience, Feed, FeedItem, FeedStart, TaskLive};
use crate::execution::{Outcome, Sink, StatusChange};
use crate::ids;
use crate::permissions::{self, AskOutcome, Check, Permissions};
use crate::protocol::{
    LogChunk, TaskCounts, TaskListParams, TaskLogsParams, TaskLogsResult, TaskOutcomes, TaskRecord,
    TaskRunParams, TaskRunResult, TaskStatus,
};
use crate::runtime::opencode::OpenCode;
use crate::runtime::opencode::task::{PromptContext, PromptJob};
use crate::store::{Store, StoreError};
use runner::{Controls, Job, Program};
use tree::ProcessTrees;

/// What a task does.
enum Work {
    Command(Job),
    Prompt(PromptJob),
}

/// The longest `timeoutS` (and `[tasks] default_timeout_s`) accepted: a year.
pub(crate) const MAX_TIMEOUT_S: u64 = 365 * 24 * 3600;

/// The most bytes one `task.logs` page returns (one chunk more at most).
const LOGS_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// Why a task call failed.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("task `{0}` not found")]
    NotFound(String),
    #[error("{0}")]
    InvalidSpec(String),
    #[error("the working directory {cwd} is outside the workspace roots ({roots})")]
    CwdOutsideRoots { cwd: String, roots: String },
    #[error("the working directory {cwd} cannot be used: {reason}")]
    CwdUnusable { cwd: String, reason: String },
    #[error("task `{task_id}` has already finished ({status})")]
    AlreadyFinished {
        task_id: String,
        status: &'static str,
    },
    #[error("idempotency key `{0}` was already used for a different request")]
    IdempotencyConflict(String),
    #[error("the {runtime} runtime is not available on this host")]
    RuntimeUnavailable { runtime: String, action: String },
    #[error(
        "no workspace root exists ({0}); create one or set tasks.workspace_roots in config.toml"
    )]
    NoWorkspaceRoot(String),
    #[error(transparent)]
    ProcessTree(#[from] tree::CgroupUnavailable),
    #[error(transparent)]
    SessionInUse(#[from] crate::runtime::opencode::SessionInUse),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs and tracks tasks.
#[derive(Clone)]
pub(crate) struct TaskManager {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    roots: Vec<PathBuf>,
    config: TasksConfig,
    active: Mutex<HashMap<String, Arc<TaskLive>>>,
    /// Held (shared) from a task's insert until it is in `active`; taken
    /// exclusively by a lookup that finds an unfinished task not yet there.
    creating: tokio::sync::RwLock<()>,
    slots: Arc<Semaphore>,
    permissions: Arc<Permissions>,
    opencode: Arc<OpenCode>,
    reaper: Arc<Reaper>,
    /// How a task's descendants are found and ended.
    trees: ProcessTrees,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl TaskManager {
    /// Prepares the manager over canonical workspace roots (see `canonical_roots`).
    pub(crate) fn new(
        store: Store,
        config: &TasksConfig,
        roots: Vec<PathBuf>,
        permissions: Arc<Permissions>,
        opencode: Arc<OpenCode>,
        reaper: Arc<Reaper>,
    ) -> Result<TaskManager, TaskError> {
        if roots.is_empty() {
            return Err(TaskError::NoWorkspaceRoot(show_paths(
                &config.workspace_roots,
            )));
        }
        let trees = ProcessTrees::new(config.process_tree)?;
        Ok(TaskManager {
            inner: Arc::new(Inner {
                store,
                roots,
                config: config.clone(),
                active: Mutex::new(HashMap::new()),
                creating: tokio::sync::RwLock::new(()),
                slots: Arc::new(Semaphore::new(config.max_concurrent)),
                permissions,
                opencode,
                reaper,
                trees,
                shutdown: CancellationToken::new(),
                tracker: TaskTracker::new(),
            }),
        })
    }

    /// Marks tasks left unfinished by a previous host as interrupted.
    pub(crate) async fn recover(&self) -> Result<usize, TaskError> {
        let now = clock::now_ms();
        Ok(self
            .inner
            .store
            .write(move |c| records::interrupt_unfinished(c, now))
            .await?)
    }

    /// The canonical workspace roots.
    pub(crate) fn roots(&self) -> &[PathBuf] {
        &self.inner.roots
    }

    fn active(&self, task_id: &str) -> Option<Arc<TaskLive>> {
        self.inner.active.lock().get(task_id).cloned()
    }

    /// Starts a task (or returns the one already started with the same idempotency key).
    ///
    /// Once the request is valid, creating the task runs on a task of its
    /// own: a caller that goes away (its connection dropped, its request was
    /// cancelled) cannot stop it halfway and leave a stored task that never runs.
    pub(crate) async fn run(
        &self,
        params: TaskRunParams,
        by: &Principal,
    ) -> Result<(TaskRunResult, Feed), TaskError> {
        let job = self.prepare(&params)?;
        let created_by = by.key();
        let manager = self.clone();
        tokio::spawn(async move { manager.create(params, created_by, job).await })
            .await
            .map_err(|_| TaskError::Store(StoreError::Closed))?
    }

    async fn create(
        &self,
        params: TaskRunParams,
        created_by: String,
        mut job: Work,
    ) -> Result<(TaskRunResult, Feed), TaskError> {
        let request_hash = params
            .idempotency_key
            .as_ref()
            .map(|_| request_hash(&params));
        if let Some(key) = &params.idempotency_key
            && let Some(existing) = self
                .find_existing(&created_by, key, request_hash.as_deref())
                .await?
        {
            return Ok(existing);
        }
        // One task at a time on an OpenCode session: a second one would take
        // the first one's events. Claimed before the task exists, so that the
        // caller hears of a conflict rather than of a failed task.
        if let Work::Prompt(prompt) = &mut job
            && let Some(session_id) = &prompt.session_id
        {
            prompt.claim = Some(self.inner.opencode.route(session_id)?);
        }
        let mut task = NewTask {
            id: ids::random_id("t_"),
            runtime: "builtin".to_owned(),
            title: params.title.clone(),
            argv: None,
            command: None,
            cwd: String::new(),
            timeout_s: None,
            created_by: created_by.clone(),
            idempotency_key: params.idempotency_key.clone(),
            request_hash: request_hash.clone(),
            created_at: clock::now_ms(),
            prompt: None,
            session_id: None,
            model: None,
            agent: None,
        };
        match &job {
            Work::Command(job) => {
                match &job.program {
                    Program::Argv(argv) => task.argv = Some(argv.clone()),
                    Program::Shell(line) => task.command = Some(line.clone()),
                }
                task.cwd = job.cwd.display().to_string();
                task.timeout_s = job.timeout.map(|t| t.as_secs());
            }
            Work::Prompt(job) => {
                task.runtime = "opencode".to_owned();
                task.cwd = job.directory.display().to_string();
                task.timeout_s = job.timeout.map(|t| t.as_secs());
                task.prompt = Some(job.prompt.clone());
                task.session_id = job.session_id.clone();
                task.model = job.model.clone();
                task.agent = job.agent.clone();
            }
        }
        let task_id = task.id.clone();
        // Between the insert and `active`, a lookup (a retry of this very
        // call after a dropped connection, say) must wait rather than take
        // the stored `queued` row for a task that will never change.
        let creating = self.inner.creating.read().await;
        let inserted = self
            .inner
            .store
            .write(move |c| records::insert_task(c, &task))
            .await;
        let rowid = match (inserted, &params.idempotency_key) {
            (Ok(rowid), _) => rowid,
            (Err(e), key) => {
                drop(creating);
                return self
                    .insert_failed(e, key.as_deref(), &created_by, request_hash)
                    .await;
            }
        };
        let live = TaskLive::new(task_id.clone(), rowid);
        // The feed exists before the task can change state, so it misses nothing.
        let feed = self.follow(Arc::clone(&live));
        self.inner
            .active
            .lock()
            .insert(task_id.clone(), Arc::clone(&live));
        drop(creating);
        let inner = Arc::clone(&self.inner);
        self.inner
            .tracker
            .spawn(drive(inner, Arc::clone(&live), job));
        Ok((
            TaskRunResult {
                task_id,
                status: TaskStatus::Queued,
            },
            feed,
        ))
    }

    /// After a failed insert: with an idempotency key, the same call may have
    /// won a race (a retry overtaking the first try); return its task.
    async fn insert_failed(
        &self,
        error: StoreError,
        key: Option<&str>,
        created_by: &str,
        request_hash: Option<String>,
    ) -> Result<(TaskRunResult, Feed), TaskError> {
        if let Some(key) = key
            && let Some(existing) = self
                .find_existing(created_by, key, request_hash.as_deref())
                .await?
        {
            return Ok(existing);
        }
        Err(error.into())
    }

    async fn find_existing(
        &self,
        created_by: &str,
        key: &str,
        hash: Option<&str>,
    ) -> Result<Option<(TaskRunResult, Feed)>, TaskError> {
        let (by, k) = (created_by.to_owned(), key.to_owned());
        let found = self
            .inner
            .store
            .read(move |c| records::find_by_idempotency_key(c, &by, &k))
            .await?;
        let Some((stored, stored_hash)) = found else {
            return Ok(None);
        };
        if stored_hash.as_deref() != hash {
            return Err(TaskError::IdempotencyConflict(key.to_owned()));
        }
        let live = self.live(&stored.record.task_id).await?;
        let status = live.status();
        Ok(Some((
            TaskRunResult {
                task_id: stored.record.task_id,
                status,
            },
            self.follow(live),
        )))
    }

    fn prepare(&self, p: &TaskRunParams) -> Result<Work, TaskError> {
        match p.runtime.as_deref() {
            None | Some("builtin") => self.prepare_command(p).map(Work::Command),
            Some("opencode") => self.prepare_prompt(p).map(Work::Prompt),
            Some(other) => Err(TaskError::InvalidSpec(format!(
                "unknown runtime `{other}`: use `builtin` or `opencode`"
            ))),
        }
    }

    fn prepare_prompt(&self, p: &TaskRunParams) -> Result<PromptJob, TaskError> {
        if let Err(unavailable) = self.inner.opencode.configured() {
            return Err(TaskError::RuntimeUnavailable {
                runtime: "opencode".into(),
                action: unavailable.action().into(),
            });
        }
        let invalid = |m: &str| Err(TaskError::InvalidSpec(m.to_owned()));
        if p.argv.is_some() || p.command.is_some() || p.env.is_some() {
            return invalid(
                "the opencode runtime takes a `prompt`, not `argv`, `command` or `env`",
            );
        }
        let Some(prompt) = p.prompt.as_ref().filter(|t| !t.trim().is_empty()) else {
            return invalid("give the `prompt` to send to OpenCode");
        };
        if p.model.as_ref().is_some_and(|m| {
            m.split_once('/')
                .is_none_or(|(a, b)| a.is_empty() || b.is_empty())
        }) {
            return invalid("`model` is `provider/model`, e.g. `anthropic/claude-sonnet-4`");
        }
        if p.session_id
            .as_ref()
            .is_some_and(|s| s.trim().is_empty() || s.contains(['/', '?', '#']))
        {
            return invalid("`sessionId` is an OpenCode session id such as `ses_…`");
        }
        check_timeout(p.timeout_s)?;
        Ok(PromptJob {
            prompt: prompt.clone(),
            session_id: p.session_id.clone(),
            model: p.model.clone(),
            agent: p.agent.clone(),
            title: p.title.clone(),
            directory: self.resolve_cwd(p.cwd.as_deref())?,
            timeout: p
                .timeout_s
                .or(self.inner.config.default_timeout_s)
                .map(Duration::from_secs),
            claim: None,
        })
    }

    fn prepare_command(&self, p: &TaskRunParams) -> Result<Job, TaskError> {
        for (name, given) in [
            ("prompt", p.prompt.is_some()),
            ("sessionId", p.session_id.is_some()),
            ("model", p.model.is_some()),
            ("agent", p.agent.is_some()),
        ] {
            if given {
                return Err(TaskError::InvalidSpec(format!(
                    "`{name}` is for the opencode runtime; the builtin runtime takes `argv` or `command`"
                )));
            }
        }
        let invalid = |m: &str| Err(TaskError::InvalidSpec(m.to_owned()));
        let program = match (&p.argv, &p.command) {
            (Some(_), Some(_)) => return invalid("give either `argv` or `command`, not both"),
            (None, None) => {
                return invalid(
                    "give `argv` (a program and its arguments) or `command` (a shell command line)",
                );
            }
            (Some(argv), None) => {
                if argv.first().is_none_or(String::is_empty) {
                    return invalid("`argv` must start with the program to run");
                }
                if argv.iter().any(|a| a.contains('\0')) {
                    return invalid("`argv` must not contain NUL bytes");
                }
                Program::Argv(argv.clone())
            }
            (None, Some(command)) => {
                if command.trim().is_empty() {
                    return invalid("`command` is empty");
                }
                if command.contains('\0') {
                    return invalid("`command` must not contain NUL bytes");
                }
                Program::Shell(command.clone())
            }
        };
        let env = p.env.clone().unwrap_or_default();
        if env
            .iter()
            .any(|(k, v)| k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0'))
        {
            return invalid(
                "`env` names must be non-empty without `=`, and no name or value may contain NUL bytes",
            );
        }
        check_timeout(p.timeout_s)?;
        if p.title.as_ref().is_some_and(|t| t.chars().count() > 200) {
            return invalid("`title` must be at most 200 characters");
        }
        if p.idempotency_key
            .as_ref()
            .is_some_and(|k| k.is_empty() || k.len() > 200)
        {
            return invalid("`idempotencyKey` must be 1 to 200 bytes");
        }
        let timeout = p
            .timeout_s
            .or(self.inner.config.default_timeout_s)
            .map(Duration::from_secs);
        Ok(Job {
            program,
            cwd: self.resolve_cwd(p.cwd.as_deref())?,
            env,
            timeout,
        })
    }

    fn resolve_cwd(&self, cwd: Option<&str>) -> Result<PathBuf, TaskError> {
        let first = &self.inner.roots[0];
        let path = match cwd {
            None => first.clone(),
            Some(c) if c.contains('\0') => {
                return Err(TaskError::InvalidSpec(
                    "`cwd` must not contain NUL bytes".into(),
                ));
            }
            Some(c) if Path::new(c).is_absolute() => PathBuf::from(c),
            Some(c) => first.join(c),
        };
        let unusable = |reason: String| TaskError::CwdUnusable {
            cwd: path.display().to_string(),
            reason,
        };
        let canonical = std::fs::canonicalize(&path).map_err(|e| unusable(e.to_string()))?;
        if !self
            .inner
            .roots
            .iter()
            .any(|root| canonical.starts_with(root))
        {
            return Err(TaskError::CwdOutsideRoots {
                cwd: canonical.display().to_string(),
                roots: show_paths(&self.inner.roots),
            });
        }
        if !canonical.is_dir() {
            return Err(unusable("not a directory".into()));
        }
        Ok(canonical)
    }

    /// A directory inside the workspace roots (absolute, or relative to the
    /// first root; the first root when `None`).
    pub(crate) fn workspace_dir(&self, dir: Option<&str>) -> Result<PathBuf, TaskError> {
        self.resolve_cwd(dir)
    }

    /// A task's record.
    pub(crate) async fn get(&self, task_id: &str) -> Result<TaskRecord, TaskError> {
        let id = task_id.to_owned();
        self.inner
            .store
            .read(move |c| records::get_task(c, &id))
            .await?
            .map(|t| t.record)
            .ok_or_else(|| TaskError::NotFound(task_id.to_owned()))
    }

    /// Tasks newest first.
    pub(crate) async fn list(&self, p: TaskListParams) -> Result<Vec<TaskRecord>, TaskError> {
        let limit = p.limit.unwrap_or(50).clamp(1, 500);
        let store = self.inner.store.clone();
        let before = match p.before {
            None => None,
            Some(before) => {
                let id = before.clone();
                let rowid = store.read(move |c| records::rowid_of(c, &id)).await?;
                Some(rowid.ok_or_else(|| TaskError::NotFound(before))?)
            }
        };
        Ok(store
            .read(move |c| records::list_tasks(c, p.status, before, limit))
            .await?)
    }

    /// The live view of a task: the running one, or one rebuilt from the store.
    pub(crate) async fn live(&self, task_id: &str) -> Result<Arc<TaskLive>, TaskError> {
        if let Some(live) = self.active(task_id) {
            return Ok(live);
        }
        let id = task_id.to_owned();
        let stored = self
            .inner
            .store
            .read(move |c| records::get_task(c, &id))
            .await?
            .ok_or_else(|| TaskError::NotFound(task_id.to_owned()))?;
        // It may have started or ended between the two looks.
        if let Some(live) = self.active(task_id) {
            return Ok(live);
        }
        let stored = if stored.record.status.is_final() {
            stored
        } else {
            // Unfinished but not active: it is being created this moment.
            // Wait until every creation under way is done, then look again.
            let _settled = self.inner.creating.write().await;
            if let Some(live) = self.active(task_id) {
                return Ok(live);
            }
            let id = task_id.to_owned();
            self.inner
                .store
                .read(move |c| records::get_task(c, &id))
                .await?
                .ok_or_else(|| TaskError::NotFound(task_id.to_owned()))?
        };
        let update = records::update_of(&stored.record);
        Ok(TaskLive::finished(
            &update,
            stored.rowid,
            stored.record.last_seq,
        ))
    }

    /// A feed of a task's output and status from `from_seq`.
    pub(crate) async fn subscribe(
        &self,
        task_id: &str,
        from_seq: Option<u64>,
    ) -> Result<(Feed, FeedStart), TaskError> {
        let live = self.live(task_id).await?;
        Ok(Feed::new(live, self.inner.store.clone(), from_seq))
    }

    /// A feed for a task just started through `run`.
    pub(crate) fn follow(&self, live: Arc<TaskLive>) -> Feed {
        Feed::new(live, self.inner.store.clone(), Some(1)).0
    }

    /// A page of stored chunks.
    pub(crate) async fn logs(&self, p: TaskLogsParams) -> Result<TaskLogsResult, TaskError> {
        let live = self.live(&p.task_id).await?;
        let (status, upto) = live.snapshot();
        let from = p.from_seq.unwrap_or(1).max(1);
        let limit = p.limit.unwrap_or(100).clamp(1, 1000);
        let (rowid, task_id) = (live.rowid, live.task_id.clone());
        let chunks: Vec<LogChunk> = self
            .inner
            .store
            .read(move |c| {
                let mut chunks = Vec::new();
                records::visit_chunks(c, rowid, from, upto, limit, LOGS_PAGE_BYTES, |r| {
                    chunks.push(log_chunk(&task_id, r.seq, r.stream, r.data, r.ts));
                })?;
                Ok(chunks)
            })
            .await?;
        let next_seq = chunks.last().map_or(from.min(upto + 1), |c| c.seq + 1);
        Ok(TaskLogsResult {
            chunks,
            next_seq,
            done: status.is_final() && next_seq > upto,
        })
    }

    /// Stops a task and returns its final record.
    pub(crate) async fn cancel(&self, task_id: &str) -> Result<TaskRecord, TaskError> {
        let Some(live) = self.active(task_id) else {
            let record = self.get(task_id).await?;
            return Err(TaskError::AlreadyFinished {
                task_id: record.task_id,
                status: record.status.as_str(),
            });
        };
        let status = live.status();
        if status.is_final() {
            return Err(TaskError::AlreadyFinished {
                task_id: task_id.to_owned(),
                status: status.as_str(),
            });
        }
        live.cancel.cancel();
        let bound =
            Duration::from_millis(self.inner.config.kill_grace_ms) + Duration::from_secs(10);
        if tokio::time::timeout(bound, live.wait_final())
            .await
            .is_err()
        {
            tracing::warn!(task = task_id, "a cancelled task did not stop in time");
        }
        self.get(task_id).await
    }

    /// Task counts by status.
    pub(crate) async fn counts(&self) -> Result<TaskCounts, TaskError> {
        Ok(self.inner.store.read(records::count_by_status).await?)
    }

    /// How the tasks that finished in the last `window` ended.
    pub(crate) async fn outcomes_within(
        &self,
        window: Duration,
    ) -> Result<TaskOutcomes, TaskError> {
        let since = clock::now_ms() - window.as_millis() as i64;
        Ok(self
            .inner
            .store
            .read(move |c| records::outcomes_since(c, since))
            .await?)
    }

    /// How the tasks that finished at or after `since_ms` ended, hour by hour:
    /// `(hour start in ms, status, count)`.
    pub(crate) async fn outcomes_by_hour(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(i64, TaskStatus, u64)>, TaskError> {
        Ok(self
            .inner
            .store
            .read(move |c| records::outcomes_by_hour(c, since_ms))
            .await?)
    }

    /// The task that finished last, if any.
    pub(crate) async fn last_finished(&self) -> Result<Option<TaskRecord>, TaskError> {
        Ok(self.inner.store.read(records::last_finished).await?)
    }

    /// Stops every task (running ones become `interrupted`) and waits for them.
    pub(crate) async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
        self.inner.trees.close();
    }
}

/// A task's `timeoutS` must be 1 s to a year: a bigger one would overflow
/// the clock it is added to.
fn check_timeout(timeout_s: Option<u64>) -> Result<(), TaskError> {
    match timeout_s {
        Some(0) => Err(TaskError::InvalidSpec(
            "`timeoutS` must be at least 1".to_owned(),
        )),
        Some(t) if t > MAX_TIMEOUT_S => Err(TaskError::InvalidSpec(format!(
            "`timeoutS` must be at most {MAX_TIMEOUT_S} (a year); leave it out for no timeout"
        ))),
        _ => Ok(()),
    }
}

/// The workspace roots that exist, resolved; the others are skipped with a warning.
pub(crate) fn canonical_roots(config: &TasksConfig) -> Vec<PathBuf> {
    let mut roots = Vec::new();
    for root in &config.workspace_roots {
        match std::fs::canonicalize(root) {
            Ok(canonical) if canonical.is_dir() => roots.push(canonical),
            _ => tracing::warn!(root = %root.display(), "workspace root does not exist; skipped"),
        }
    }
    roots
}

/// The policy gate: `None` to go on, or how the task ends without running.
async fn gate(
    inner: &Inner,
    live: &Arc<TaskLive>,
    sink: &mut Sink,
    job: &Job,
    place: &mut Option<Place>,
) -> Option<Outcome> {
    let line = job.program.command_line();
    let check = match inner
        .permissions
        .check_command(&live.task_id, &line, &job.cwd)
        .await
    {
        Ok(check) => check,
        Err(e) => {
            return Some(Outcome::ended(
                TaskStatus::Failed,
                format!("the host could not check this task against its policy ({e})"),
            ));
        }
    };
    let findings = match check {
        Check::Allow => return None,
        Check::Deny(finding) => {
            return Some(Outcome::ended(
                TaskStatus::Failed,
                format!(
                    "denied by this host's policy: `{}` {} (rule {})",
                    finding.command, finding.explain, finding.rule_id
                ),
            ));
        }
        Check::Ask(findings) => findings,
    };
    // No slot is held (or waited for) while a person decides.
    *place = None;
    // The request follows the status change in every follower's feed.
    let _ = sink
        .status(TaskStatus::WaitingPermission, StatusChange::default())
        .await
        .await;
    let ask = permissions::builtin_ask(&live.task_id, &line, &job.cwd, &findings);
    match inner
        .permissions
        .ask(live.as_ref(), ask, &live.cancel, &inner.shutdown)
        .await
    {
        Ok(AskOutcome::Allowed { .. }) => {
            sink.status(TaskStatus::Queued, StatusChange::default())
                .await;
            None
        }
        Ok(AskOutcome::Rejected { by }) => Some(Outcome::ended(
            TaskStatus::Cancelled,
            format!("{by} rejected the permission request"),
        )),
        Ok(AskOutcome::Expired { after }) => Some(Outcome::ended(
            TaskStatus::Cancelled,
            format!(
                "no one answered the permission request within {} s",
                after.as_secs()
            ),
        )),
        Ok(AskOutcome::Withdrawn) if inner.shutdown.is_cancelled() => Some(Outcome::ended(
            TaskStatus::Interrupted,
            "the host shut down while the task waited for permission",
        )),
        Ok(AskOutcome::Withdrawn) => Some(Outcome::ended(
            TaskStatus::Cancelled,
            "cancelled while it waited for permission",
        )),
        Err(e) => Some(Outcome::ended(
            TaskStatus::Failed,
            format!("the host could not record the permission request ({e})"),
        )),
    }
}

/// Runs a task from `queued` to its final status, whatever its runtime.
async fn drive(inner: Arc<Inner>, live: Arc<TaskLive>, work: Work) {
    let mut sink = Sink::new(inner.store.clone(), Arc::clone(&live));
    let outcome = execute(&inner, &live, &mut sink, work).await;
    let committed = sink.status(outcome.status, outcome.change).await;
    let _ = committed.await;
    retire(&inner, &live);
}

/// The one path every task takes: the policy gate (built-in commands only:
/// OpenCode asks per action, while it runs), then a slot, then its runtime.
async fn execute(inner: &Inner, live: &Arc<TaskLive>, sink: &mut Sink, work: Work) -> Outcome {
    // The task takes its place in the queue for a slot now, before the policy
    // check (which runs on a worker and may finish in any order), so that
    // tasks start in the order they were asked for. A task that must ask a
    // person gives its place up while it waits (see `gate`).
    let mut place = Some(Place::take(inner));
    if let Work::Command(job) = &work
        && let Some(outcome) = gate(inner, live, sink, job, &mut place).await
    {
        return outcome;
    }
    let _slot = match admit(inner, live, place).await {
        Ok(slot) => slot,
        Err(outcome) => return outcome,
    };
    match work {
        Work::Command(job) => {
            let controls = Controls {
                cancel: &live.cancel,
                shutdown: &inner.shutdown,
                reaper: &inner.reaper,
                trees: &inner.trees,
                kill_grace: Duration::from_millis(inner.config.kill_grace_ms),
            };
            runner::run(job, sink, controls).await
        }
        Work::Prompt(job) => {
            let ctx = PromptContext {
                opencode: &inner.opencode,
                permissions: &inner.permissions,
                live,
                shutdown: &inner.shutdown,
            };
            crate::runtime::opencode::task::run(job, sink, ctx).await
        }
    }
}

/// A task's place in the queue for a slot: the slot itself when one was free,
/// or the wait for one, which keeps its place in line (the semaphore is fair).
enum Place {
    Taken(OwnedSemaphorePermit),
    Waiting(Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>),
}

impl Place {
    /// Joins the queue now: the wait is polled once, which puts it in line.
    fn take(inner: &Inner) -> Place {
        let mut wait = Box::pin(Arc::clone(&inner.slots).acquire_owned());
        match futures::FutureExt::now_or_never(wait.as_mut()) {
            Some(Ok(permit)) => Place::Taken(permit),
            _ => Place::Waiting(wait),
        }
    }
}

/// Admission, the same for every runtime: a task starts once one of the
/// `max_concurrent` slots is free and stays `queued` until then, in the order
/// tasks joined the queue (`place`, or the back of the queue without one).
/// The slot is held until the task ends; a task cancelled (or a host
/// stopping) while it waits ends without starting.
async fn admit(
    inner: &Inner,
    live: &TaskLive,
    place: Option<Place>,
) -> Result<OwnedSemaphorePermit, Outcome> {
    let shut_down = || {
        Outcome::ended(
            TaskStatus::Interrupted,
            "the host shut down before the task started",
        )
    };
    let wait = match place.unwrap_or_else(|| Place::take(inner)) {
        Place::Taken(permit) => return Ok(permit),
        Place::Waiting(wait) => wait,
    };
    tokio::select! {
        // The semaphore is never closed; were it, the host would be stopping.
        permit = wait => permit.map_err(|_| shut_down()),
        _ = live.cancel.cancelled() => {
            Err(Outcome::ended(TaskStatus::Cancelled, "cancelled before it started"))
        }
        _ = inner.shutdown.cancelled() => Err(shut_down()),
    }
}

/// A task has ended: it leaves the active set. When it was the last one, the
/// memory its output passed through goes back to the system (the allocator
/// keeps freed memory while output streams; see `crate::alloc`).
fn retire(inner: &Inner, live: &TaskLive) {
    let idle = {
        let mut active = inner.active.lock();
        active.remove(&live.task_id);
        active.is_empty()
    };
    if idle {
        tokio::task::spawn_blocking(crate::alloc::give_back_freed_memory);
    }
}

/// A digest of what a `task.run` asked for, so that a reused idempotency key
/// with a different request is caught. Env values are left out: they may be secrets.
fn request_hash(p: &TaskRunParams) -> String {
    let mut p = p.clone();
    p.idempotency_key = None;
    p.env = p.env.map(|env| {
        env.into_keys()
            .map(|k| (k, String::new()))
            .collect::<BTreeMap<_, _>>()
    });
    let canonical = serde_json::to_vec(&p).unwrap_or_default();
    ids::base32(&Sha256::digest(&canonical))
}

fn show_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
