//! The built-in runtime: runs a command as a child process in its own process
//! group, streams its stdout and stderr, and stops it on cancel, timeout or
//! host shutdown (SIGTERM to every process of the task, SIGKILL after a grace
//! period).
//!
//! When the main process exits, everything it left running is killed, also
//! what detached from its group (`setsid`, a double fork): a task does not
//! leak processes (`super::tree` finds them). The exit is observed with
//! `waitid(WNOWAIT)` so that the pid cannot be reused before the tree is ended.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::tree::{ProcessTrees, TaskTree};
use crate::clock;
use crate::execution::chunk::{MAX_CHUNK, complete_prefix_len, split_chunks};
use crate::execution::reaper::Reaper;
use crate::execution::{Outcome, Sink, StatusChange};
use crate::protocol::{LogStream, TaskStatus};

/// How long to keep reading output after the main process exited and the
/// rest of the task was killed (a process stuck in the kernel may still hold
/// the pipe).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// How long to wait, after SIGKILL, for the last processes of a task to die.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// What to run.
#[derive(Debug, Clone)]
pub(crate) enum Program {
    /// A program and its arguments, run directly.
    Argv(Vec<String>),
    /// A command line for `/bin/sh -c`.
    Shell(String),
}

impl Program {
    /// The command line, as the policy and people read it.
    pub(crate) fn command_line(&self) -> String {
        match self {
            Program::Argv(argv) => crate::permissions::policy::shell_join(argv),
            Program::Shell(line) => line.clone(),
        }
    }

    fn name(&self) -> &str {
        match self {
            Program::Argv(argv) => argv.first().map_or("", String::as_str),
            Program::Shell(_) => "/bin/sh",
        }
    }
}

/// A task ready to run.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub program: Program,
    pub cwd: PathBuf,
    pub env: BTreeMap<String, String>,
    pub timeout: Option<Duration>,
}

/// What stops a task early.
pub(crate) struct Controls<'a> {
    pub cancel: &'a CancellationToken,
    pub shutdown: &'a CancellationToken,
    pub reaper: &'a Reaper,
    pub trees: &'a ProcessTrees,
    pub kill_grace: Duration,
}

#[derive(Clone, Copy)]
enum Stop {
    Cancelled,
    TimedOut(Duration),
    Shutdown,
    StoreFailed,
}

/// What woke a running task's loop.
enum Wake {
    /// A read from one of its pipes (0 bytes or an error: the pipe closed).
    Read(LogStream, std::io::Result<usize>),
    /// The main process exited.
    Exited,
    Stop(Stop),
    Timer(Timer),
}

/// The timers of a running task.
#[derive(Clone, Copy)]
enum Timer {
    /// Its timeout.
    Deadline,
    /// The grace after SIGTERM is over: SIGKILL.
    Kill,
    /// Output after the main process exited has been read long enough.
    DrainEnd,
}

/// Where a running task is: which pipes are open, whether the main process
/// has exited, why it is being stopped, and the timers that follow from that.
struct Watch {
    out_open: bool,
    err_open: bool,
    exited: bool,
    stop: Option<Stop>,
    deadline: Option<Instant>,
    /// When to follow SIGTERM with SIGKILL.
    kill_at: Option<Instant>,
    /// After the main process exited: until when its pipes are still read.
    drain_until: Option<Instant>,
}

impl Watch {
    fn new(timeout: Option<Duration>) -> Watch {
        Watch {
            out_open: true,
            err_open: true,
            exited: false,
            stop: None,
            deadline: timeout.map(|t| Instant::now() + t),
            kill_at: None,
            drain_until: None,
        }
    }

    /// The main process has exited and both pipes are closed.
    fn done(&self) -> bool {
        self.exited && !self.out_open && !self.err_open
    }

    /// The timer due first, of those that still matter: the timeout until
    /// the task is being stopped, SIGKILL until the main process exited, and
    /// the end of reading after it.
    fn next_timer(&self) -> Option<(Instant, Timer)> {
        let deadline = self
            .deadline
            .filter(|_| self.stop.is_none())
            .map(|at| (at, Timer::Deadline));
        let kill = self
            .kill_at
            .filter(|_| !self.exited)
            .map(|at| (at, Timer::Kill));
        let drain = self.drain_until.map(|at| (at, Timer::DrainEnd));
        [deadline, kill, drain]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
    }

    /// The main process exited: the rest of its tree is killed (its pid and
    /// group id are still ours while it is a zombie), and its pipes are read
    /// a little longer.
    fn main_exited(&mut self, tree: &mut TaskTree) {
        self.exited = true;
        tree.kill();
        self.drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
    }

    /// Starts stopping the task for `why` (the first reason counts): SIGTERM
    /// now, SIGKILL after the grace (at most 2 s when the host shuts down).
    fn stop(&mut self, why: Stop, tree: &mut TaskTree, grace: Duration) {
        if self.stop.is_some() {
            return;
        }
        let grace = match why {
            Stop::Shutdown => grace.min(Duration::from_secs(2)),
            _ => grace,
        };
        self.stop = Some(why);
        self.kill_at = Some(terminate(tree, grace));
    }
}

/// The pipe size asked for a task's output, so that a fast writer is not
/// woken for every 64 KiB (the kernel may grant less).
const PIPE_SIZE: i32 = 1024 * 1024;

/// The most read from a pipe at once, cut into chunks after. A task that
/// writes faster than the host reads keeps its pipe full, and each read from
/// a full pipe wakes it: reading several chunks at a time wakes it (and
/// calls the kernel) a quarter as often.
const READ_AT_ONCE: usize = 4 * MAX_CHUNK;

/// One output pipe's read buffer, holding back a UTF-8 sequence cut by a read.
struct PipeBuffer {
    stream: LogStream,
    buf: BytesMut,
}

impl PipeBuffer {
    fn new(stream: LogStream) -> PipeBuffer {
        PipeBuffer {
            stream,
            buf: BytesMut::with_capacity(READ_AT_ONCE),
        }
    }

    /// Reads once from `pipe`: at most `READ_AT_ONCE`, counting bytes held back. Cancel-safe.
    async fn fill<R: tokio::io::AsyncRead + Unpin>(
        &mut self,
        pipe: &mut R,
    ) -> std::io::Result<usize> {
        let room = READ_AT_ONCE - self.buf.len();
        self.buf.reserve(room);
        pipe.read_buf(&mut (&mut self.buf).limit(room)).await
    }

    /// After a read: the bytes that can be sent now. A read that filled
    /// most of the buffer is handed on as it is (no copy); a smaller one is
    /// copied out, so that it does not keep the whole buffer alive while it
    /// waits in memory for subscribers, and the buffer is read into again.
    fn take(&mut self) -> Bytes {
        let ready = complete_prefix_len(&self.buf);
        if ready >= READ_AT_ONCE / 2 {
            return self.buf.split_to(ready).freeze();
        }
        let taken = Bytes::copy_from_slice(&self.buf[..ready]);
        self.buf.advance(ready);
        taken
    }

    /// At end of stream: whatever was held back.
    fn rest(&mut self) -> Bytes {
        self.buf.split().freeze()
    }
}

fn command(job: &Job) -> Command {
    let mut command = match &job.program {
        Program::Argv(argv) => {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        }
        Program::Shell(line) => {
            let mut c = Command::new("/bin/sh");
            c.arg("-c").arg(line);
            c
        }
    };
    command
        .current_dir(&job.cwd)
        .envs(&job.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    command
}

/// Starts the job's process inside `tree`; when it cannot be put in the
/// tree's cgroup, it starts again with the walk instead.
fn spawn(job: &Job, tree: TaskTree) -> (std::io::Result<tokio::process::Child>, TaskTree) {
    let mut c = command(job);
    tree.prepare(&mut c);
    match c.spawn() {
        Err(e) if tree.cgroup().is_some() => {
            tracing::warn!(error = %e, "cannot start a task in its cgroup; trying without");
            let tree = tree.without_cgroup();
            let mut c = command(job);
            tree.prepare(&mut c);
            (c.spawn(), tree)
        }
        spawned => (spawned, tree),
    }
}

/// Runs a job to its end, writing output and the `running` status to `sink`.
pub(crate) async fn run(job: Job, sink: &mut Sink, controls: Controls<'_>) -> Outcome {
    let (spawned, mut tree) = spawn(&job, controls.trees.tree());
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return Outcome::failed(spawn_error(job.program.name(), &e)),
    };
    let (Some(pid), Some(mut stdout), Some(mut stderr)) =
        (child.id(), child.stdout.take(), child.stderr.take())
    else {
        return Outcome::failed("the process could not be started with its output attached".into());
    };
    let pgid = pid as i32;
    tree.started(pgid);
    guard(controls.reaper, &tree, pgid);
    for fd in [stdout.as_fd(), stderr.as_fd()] {
        // Best effort: a smaller pipe only costs throughput.
        let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    }
    sink.status(
        TaskStatus::Running,
        StatusChange {
            started_at: Some(clock::now_ms()),
            pgid: Some(pgid),
            ..StatusChange::default()
        },
    )
    .await;

    let mut out = PipeBuffer::new(LogStream::Stdout);
    let mut err = PipeBuffer::new(LogStream::Stderr);
    let exited = tokio::task::spawn_blocking(move || wait_exit_without_reaping(pid));
    tokio::pin!(exited);
    let mut state = Watch::new(job.timeout);
    let never = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    while !state.done() {
        let timer = state.next_timer();
        let (timer_at, timer_kind) = timer.unwrap_or((never, Timer::Deadline));
        let wake = tokio::select! {
            r = out.fill(&mut stdout), if state.out_open => Wake::Read(LogStream::Stdout, r),
            r = err.fill(&mut stderr), if state.err_open => Wake::Read(LogStream::Stderr, r),
            _ = &mut exited, if !state.exited => Wake::Exited,
            _ = controls.cancel.cancelled(), if state.stop.is_none() => Wake::Stop(Stop::Cancelled),
            _ = controls.shutdown.cancelled(), if state.stop.is_none() => Wake::Stop(Stop::Shutdown),
            _ = sleep_until(timer_at), if timer.is_some() => Wake::Timer(timer_kind),
        };
        let (stream, data) = match wake {
            Wake::Read(stream, read) => {
                let (pipe, open) = match stream {
                    LogStream::Stderr => (&mut err, &mut state.err_open),
                    _ => (&mut out, &mut state.out_open),
                };
                match read {
                    Ok(n) if n > 0 => (pipe.stream, pipe.take()),
                    _ => {
                        *open = false;
                        (pipe.stream, pipe.rest())
                    }
                }
            }
            Wake::Exited => {
                state.main_exited(&mut tree);
                continue;
            }
            Wake::Stop(why) => {
                state.stop(why, &mut tree, controls.kill_grace);
                continue;
            }
            Wake::Timer(Timer::Deadline) => {
                let after = job.timeout.unwrap_or_default();
                state.stop(Stop::TimedOut(after), &mut tree, controls.kill_grace);
                continue;
            }
            Wake::Timer(Timer::Kill) => {
                tree.kill();
                state.kill_at = None;
                continue;
            }
            Wake::Timer(Timer::DrainEnd) => break,
        };
        for chunk in split_chunks(data) {
            let saved = sink.chunk(stream, chunk).await;
            if saved.is_err() || sink.live().store_error().is_some() {
                state.stop(Stop::StoreFailed, &mut tree, controls.kill_grace);
            }
        }
    }
    drop((stdout, stderr));
    // Whatever is left of the task (detached, or holding no pipe) ends
    // now, before the leader is reaped and its pid can be reused.
    tree.finish(KILL_WAIT).await;
    let status = child.wait().await;
    unguard(controls.reaper, &tree, pgid);
    tree.release();
    let store_error = sink.live().store_error();
    ending(state.stop, status, store_error)
}

/// The crash guard ends the task's processes should the host die.
fn guard(reaper: &Reaper, tree: &TaskTree, pgid: i32) {
    reaper.watch(pgid);
    if let Some(cgroup) = tree.cgroup() {
        reaper.watch_cgroup(cgroup);
    }
    if let Some(marker) = tree.marker() {
        reaper.watch_marker(marker);
    }
}

/// The task's processes are gone: the crash guard forgets them.
fn unguard(reaper: &Reaper, tree: &TaskTree, pgid: i32) {
    reaper.forget(pgid);
    if let Some(cgroup) = tree.cgroup() {
        reaper.forget_cgroup(cgroup);
    }
    if let Some(marker) = tree.marker() {
        reaper.forget_marker(marker);
    }
}

/// How a task ended: why it was stopped, if it was, else how its main
/// process exited.
fn ending(
    stop: Option<Stop>,
    status: std::io::Result<std::process::ExitStatus>,
    store_error: Option<crate::store::StoreError>,
) -> Outcome {
    let (exit_code, signal) = match &status {
        Ok(status) => (status.code(), status.signal().map(signal_name)),
        Err(_) => (None, None),
    };
    let (status, error) = match stop {
        Some(Stop::Cancelled) => (
            TaskStatus::Cancelled,
            Some("cancelled on request".to_owned()),
        ),
        Some(Stop::TimedOut(t)) => (
            TaskStatus::Failed,
            Some(format!("timed out after {} s and was stopped", t.as_secs())),
        ),
        Some(Stop::Shutdown) => (
            TaskStatus::Interrupted,
            Some("the host shut down while the task was running".to_owned()),
        ),
        Some(Stop::StoreFailed) => (
            TaskStatus::Failed,
            Some(format!(
                "the host could not save the task's output ({}); check free disk space in the data dir",
                store_error.map_or_else(|| "store closed".to_owned(), |e| e.to_string())
            )),
        ),
        None => match (exit_code, &signal) {
            (Some(0), _) => (TaskStatus::Succeeded, None),
            (Some(code), _) => (TaskStatus::Failed, Some(format!("exited with code {code}"))),
            (None, Some(signal)) => (TaskStatus::Failed, Some(format!("killed by {signal}"))),
            (None, None) => (
                TaskStatus::Failed,
                Some("the process ended in an unknown way".to_owned()),
            ),
        },
    };
    Outcome {
        status,
        change: StatusChange {
            exit_code,
            signal,
            error,
            finished_at: Some(clock::now_ms()),
            ..StatusChange::default()
        },
    }
}

/// Sends SIGTERM to every process of the task and returns when to follow up with SIGKILL.
fn terminate(tree: &mut TaskTree, grace: Duration) -> Instant {
    tree.signal(Signal::SIGTERM);
    Instant::now() + grace
}

/// Blocks until the process has exited, leaving it unreaped (a zombie).
fn wait_exit_without_reaping(pid: u32) {
    use nix::sys::wait::{Id, WaitPidFlag, waitid};
    loop {
        match waitid(
            Id::Pid(Pid::from_raw(pid as i32)),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            _ => return,
        }
    }
}

fn signal_name(signal: i32) -> String {
    Signal::try_from(signal).map_or_else(|_| format!("signal {signal}"), |s| s.as_str().to_owned())
}

fn spawn_error(program: &str, e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            format!("command not found: `{program}` (check the name, or give its full path)")
        }
        std::io::ErrorKind::PermissionDenied => {
            format!("permission denied running `{program}` (is it executable?)")
        }
        _ => format!("cannot start `{program}`: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_read_is_handed_on_and_a_small_one_copied_out_of_a_reused_buffer() {
        let mut pipe = PipeBuffer::new(LogStream::Stdout);
        let start = pipe.buf.as_ptr();
        // A full read: its chunks are the buffer itself.
        let full = vec![b'x'; READ_AT_ONCE];
        assert_eq!(pipe.fill(&mut &full[..]).await.unwrap(), READ_AT_ONCE);
        let taken = pipe.take();
        assert_eq!(taken.len(), READ_AT_ONCE);
        assert_eq!(taken.as_ptr(), start);
        // A small read, into a fresh buffer (the old one is in use): copied
        // out, leaving the buffer free for the next read.
        assert_eq!(pipe.fill(&mut &b"hello\n"[..]).await.unwrap(), 6);
        let fresh = pipe.buf.as_ptr();
        assert_ne!(fresh, start);
        assert_eq!(&pipe.take()[..], b"hello\n");
        assert_eq!(pipe.fill(&mut &b"again \xE2\x82"[..]).await.unwrap(), 8);
        assert_eq!(pipe.buf.as_ptr(), fresh, "the same buffer, read into again");
        // A sequence cut by the read waits for its end.
        assert_eq!(&pipe.take()[..], b"again ");
        assert_eq!(pipe.fill(&mut &b"\xAC!"[..]).await.unwrap(), 2);
        assert_eq!(&pipe.take()[..], "€!".as_bytes());
        assert!(pipe.rest().is_empty());
    }
}
