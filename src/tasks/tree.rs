//! A task's process tree: everything its main process started, however it
//! detached (`setsid`, double fork), so that cancel, timeout, host shutdown
//! and the main process's own exit end every descendant.
//!
//! Two ways, chosen once per host (`[tasks] process_tree`):
//!
//! - **cgroup**: where the host may create cgroup v2 groups under its own
//!   (root, or a delegated subtree), each task runs in a group of its own and
//!   is ended with `cgroup.kill`, which no fork or `setsid` escapes.
//! - **walk**: otherwise the task's main process is made a child subreaper
//!   (`PR_SET_CHILD_SUBREAPER`, kept across `exec`), so that a descendant
//!   that detaches is re-parented to it rather than to init and stays in its
//!   tree; the host walks `/proc` for the main process's descendants, its
//!   process group, every process seen in the tree before, and every process
//!   still carrying the task's marker variable (`OPENWORK_HOST_TASK`), which
//!   is how detached descendants are found once the main process is gone.
//!   Only the task's main process is a subreaper, never the host itself, so
//!   the host never adopts (and never has to reap) a task's orphans.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::Deserialize;

/// The environment variable that marks a task's processes (walk mode).
pub(crate) const MARKER_VAR: &str = "OPENWORK_HOST_TASK";

/// The prefix of the cgroup a host makes under its own, `openwork-host.PID`.
const BASE_PREFIX: &str = "openwork-host.";

/// How a host ends a task's descendants (`[tasks] process_tree`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TreeMode {
    /// A cgroup per task where the host may create one, else the walk.
    #[default]
    Auto,
    /// A cgroup per task; the host does not start without one.
    Cgroup,
    /// Never a cgroup: a subreaper main process and a walk of `/proc`.
    Walk,
}

/// Why the cgroup mode that was asked for cannot be used.
#[derive(Debug, thiserror::Error)]
#[error(
    "`[tasks] process_tree = \"cgroup\"` but {0}; set `process_tree = \"auto\"` (or \"walk\") in config.toml, or run the host where it may create cgroups (as root, or in a delegated cgroup v2 subtree)"
)]
pub struct CgroupUnavailable(String);

/// The host's way of containing tasks, decided at start.
#[derive(Debug)]
pub(crate) struct ProcessTrees {
    /// The host's own cgroup for tasks (`…/openwork-host.PID`), in cgroup mode.
    base: Option<PathBuf>,
}

impl ProcessTrees {
    /// Decides the mode; in `Auto`, falls back to the walk with a log line.
    pub(crate) fn new(mode: TreeMode) -> Result<ProcessTrees, CgroupUnavailable> {
        let base = match mode {
            TreeMode::Walk => None,
            TreeMode::Auto => match create_base() {
                Ok(base) => Some(base),
                Err(why) => {
                    tracing::info!(
                        reason = %why,
                        "no cgroup for tasks; their descendants are found by walking /proc"
                    );
                    None
                }
            },
            TreeMode::Cgroup => Some(create_base().map_err(CgroupUnavailable)?),
        };
        if let Some(base) = &base {
            tracing::info!(cgroup = %base.display(), "each task runs in a cgroup of its own");
        }
        Ok(ProcessTrees { base })
    }

    /// A tree for a task about to start: its cgroup is made here.
    pub(crate) fn tree(&self) -> TaskTree {
        let marker = format!("{:016x}", rand::random::<u64>());
        let cgroup = self.base.as_ref().and_then(|base| {
            let dir = base.join(format!("t{marker}"));
            match Cgroup::create(dir) {
                Ok(cgroup) => Some(cgroup),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot make a cgroup for a task; walking /proc for its descendants instead");
                    None
                }
            }
        });
        TaskTree {
            cgroup,
            marker,
            leader: None,
            seen: HashMap::new(),
        }
    }

    /// Removes the host's cgroup (once every task has ended).
    pub(crate) fn close(&self) {
        if let Some(base) = &self.base {
            remove_cgroup_dir(base);
        }
    }
}

impl Drop for ProcessTrees {
    fn drop(&mut self) {
        self.close();
    }
}

/// One task's processes.
pub(crate) struct TaskTree {
    cgroup: Option<Cgroup>,
    marker: String,
    /// The main process (also the process group id).
    leader: Option<i32>,
    /// Every process found in the tree so far, with its start time (so that
    /// a reused pid is not taken for it).
    seen: HashMap<i32, u64>,
}

struct Cgroup {
    dir: PathBuf,
    /// `cgroup.procs`, opened before the fork: the child writes its own pid
    /// there between fork and exec, so it is inside before it can fork.
    procs: OwnedFd,
}

impl Cgroup {
    fn create(dir: PathBuf) -> std::io::Result<Cgroup> {
        std::fs::create_dir(&dir)?;
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))
            .map(OwnedFd::from);
        match procs {
            Ok(procs) => Ok(Cgroup { dir, procs }),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(e)
            }
        }
    }
}

impl TaskTree {
    /// The task's cgroup, in cgroup mode.
    pub(crate) fn cgroup(&self) -> Option<&Path> {
        self.cgroup.as_ref().map(|c| c.dir.as_path())
    }

    /// The value of the marker variable, when the task is found by the walk.
    pub(crate) fn marker(&self) -> Option<&str> {
        self.cgroup.is_none().then_some(self.marker.as_str())
    }

    /// Sets up the command so that its process starts inside the tree.
    pub(crate) fn prepare(&self, command: &mut tokio::process::Command) {
        let procs = self.cgroup.as_ref().map(|c| c.procs.as_raw_fd());
        if procs.is_none() {
            command.env(MARKER_VAR, &self.marker);
        }
        // SAFETY: between fork and exec only async-signal-safe calls are
        // made (write, prctl), on memory set up before the fork.
        unsafe {
            command.pre_exec(move || {
                match procs {
                    Some(fd) => {
                        // "0" is "the writing process".
                        if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    None => {
                        if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                }
                Ok(())
            });
        }
    }

    /// The main process has started.
    pub(crate) fn started(&mut self, pid: i32) {
        self.leader = Some(pid);
        if let Some(start) = start_time(pid) {
            self.seen.insert(pid, start);
        }
    }

    /// Sends `signal` to every process of the task.
    pub(crate) fn signal(&mut self, signal: Signal) {
        // Found first: once the main process dies, what it adopted goes to
        // init, and (with the walk) only what was seen before is still known.
        let members = self.members();
        if let Some(pgid) = self.leader {
            signal_group(pgid, signal);
        }
        for pid in members {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    /// Kills every process of the task (SIGKILL; `cgroup.kill` in cgroup mode).
    pub(crate) fn kill(&mut self) {
        if let Some(cgroup) = &self.cgroup
            && std::fs::write(cgroup.dir.join("cgroup.kill"), "1").is_ok()
        {
            return;
        }
        self.signal(Signal::SIGKILL);
    }

    /// Whether no process of the task is alive.
    pub(crate) fn is_empty(&mut self) -> bool {
        self.members().is_empty()
    }

    /// Kills what is left and waits (up to `bound`) until nothing is alive;
    /// then removes the cgroup. Returns whether the tree is empty.
    pub(crate) async fn finish(&mut self, bound: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + bound;
        let mut empty = self.is_empty();
        while !empty && tokio::time::Instant::now() < deadline {
            self.kill();
            tokio::time::sleep(Duration::from_millis(10)).await;
            empty = self.is_empty();
        }
        if !empty {
            tracing::warn!(
                left = ?self.members(),
                "processes of a task outlived SIGKILL (stuck in the kernel?)"
            );
        }
        empty
    }

    /// The same task without its cgroup: when a process cannot be put in
    /// it, the task runs with the walk instead.
    pub(crate) fn without_cgroup(mut self) -> TaskTree {
        self.release();
        self
    }

    /// Removes the cgroup (after the main process was reaped).
    pub(crate) fn release(&mut self) {
        if let Some(cgroup) = self.cgroup.take() {
            remove_cgroup_dir(&cgroup.dir);
        }
    }

    /// The live processes of the task.
    fn members(&mut self) -> Vec<i32> {
        match &self.cgroup {
            Some(cgroup) => cgroup_procs(&cgroup.dir),
            None => {
                let found = walk(self.leader, &self.seen, &self.marker);
                for p in &found {
                    self.seen.insert(p.pid, p.start);
                }
                found.iter().filter(|p| p.alive).map(|p| p.pid).collect()
            }
        }
    }
}

impl Drop for TaskTree {
    fn drop(&mut self) {
        self.release();
    }
}

fn signal_group(pgid: i32, signal: Signal) {
    if let Err(e) = killpg(Pid::from_raw(pgid), signal)
        && e != nix::errno::Errno::ESRCH
    {
        tracing::warn!(pgid, %signal, error = %e, "could not signal a task's process group");
    }
}

/// Pids in a cgroup (and the groups below it).
fn cgroup_procs(dir: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    collect_procs(dir, &mut pids, 0);
    pids
}

fn collect_procs(dir: &Path, pids: &mut Vec<i32>, depth: usize) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    // A task may make groups of its own below (when delegated); bounded depth.
    if depth < 16
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_procs(&entry.path(), pids, depth + 1);
            }
        }
    }
}

/// Removes a cgroup directory and the groups below it; a group still busy
/// (its last processes exiting) is retried for a moment.
fn remove_cgroup_dir(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_dir(&entry.path());
            }
        }
    }
    for _ in 0..50 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => {
                tracing::debug!(cgroup = %dir.display(), error = %e, "cannot remove a task cgroup");
                return;
            }
        }
    }
}

/// Makes the host's cgroup for tasks, `openwork-host.PID` in the host's own
/// cgroup, and removes those left by hosts that are gone.
fn create_base() -> Result<PathBuf, String> {
    let own = own_cgroup_dir()?;
    // Moving a process between two groups takes write access to their
    // common ancestor's processes file: the host's own group.
    let own_procs = own.join("cgroup.procs");
    nix::unistd::access(&own_procs, nix::unistd::AccessFlags::W_OK)
        .map_err(|e| format!("{} is not writable: {e}", own_procs.display()))?;
    remove_stale_bases(&own);
    // One per host: a process that runs several (tests, an embedding
    // program) gives each a group of its own, `openwork-host.PID-N`.
    static HOSTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let base = match HOSTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) {
        0 => own.join(format!("{BASE_PREFIX}{}", std::process::id())),
        n => own.join(format!("{BASE_PREFIX}{}-{n}", std::process::id())),
    };
    match std::fs::create_dir(&base) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", base.display())),
    }
    // A probe: a group of our own, whose processes file we may write and
    // which can be killed as a whole.
    let probe = base.join("probe");
    let usable = Cgroup::create(probe.clone())
        .map_err(|e| format!("cannot create a cgroup in {}: {e}", base.display()))
        .and_then(|_| {
            if probe.join("cgroup.kill").exists() {
                Ok(())
            } else {
                Err("the kernel has no cgroup.kill (Linux 5.14 or newer has it)".to_owned())
            }
        });
    let _ = std::fs::remove_dir(&probe);
    if let Err(e) = usable {
        let _ = std::fs::remove_dir(&base);
        return Err(e);
    }
    Ok(base)
}

/// The host's own cgroup v2 directory: where cgroup2 is mounted, plus the
/// path in `/proc/self/cgroup`.
fn own_cgroup_dir() -> Result<PathBuf, String> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
    let path = cgroups
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("the host is not in a cgroup v2 hierarchy")?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    let (root, mount) = mountinfo
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            if right.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            let fields: Vec<&str> = left.split_whitespace().collect();
            Some((fields.get(3)?.to_string(), fields.get(4)?.to_string()))
        })
        .ok_or("no cgroup2 file system is mounted")?;
    // Mount points escape spaces (`\040`); the reaper's protocol splits on
    // whitespace, so such paths are not used.
    if mount.contains('\\') || path.contains(char::is_whitespace) {
        return Err(format!("the cgroup path {mount}{path} has spaces"));
    }
    let relative = path
        .strip_prefix(root.trim_end_matches('/'))
        .ok_or_else(|| format!("the host's cgroup {path} is outside the mounted {root}"))?;
    Ok(Path::new(&mount).join(relative.trim_start_matches('/')))
}

/// Removes `openwork-host.PID` groups of hosts no longer running (left by a
/// host that crashed; the reaper killed their processes).
fn remove_stale_bases(own: &Path) {
    let Ok(entries) = std::fs::read_dir(own) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(BASE_PREFIX))
            .and_then(|p| p.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() as i32
            && kill(Pid::from_raw(pid), None) == Err(nix::errno::Errno::ESRCH)
        {
            remove_cgroup_dir(&entry.path());
        }
    }
}

/// One process as `/proc/PID/stat` shows it.
struct Proc {
    pid: i32,
    ppid: i32,
    pgrp: i32,
    start: u64,
    alive: bool,
}

fn read_stat(pid: i32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last `)`.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest: state(0) ppid(1) pgrp(2) … starttime(19)
    Some(Proc {
        pid,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
        alive: !matches!(*fields.first()?, "Z" | "X"),
    })
}

fn start_time(pid: i32) -> Option<u64> {
    read_stat(pid).map(|p| p.start)
}

fn has_marker(pid: i32, marker: &str) -> bool {
    let needle = format!("{MARKER_VAR}={marker}");
    std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
        environ
            .split(|b| *b == 0)
            .any(|entry| entry == needle.as_bytes())
    })
}

/// The task's processes (zombies included, flagged): the main process's
/// descendants, its process group, processes seen before, processes with
/// the marker, and their descendants. Never the host itself, nor init.
fn walk(leader: Option<i32>, seen: &HashMap<i32, u64>, marker: &str) -> Vec<Proc> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let procs: Vec<Proc> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me && pid > 1)
        .filter_map(read_stat)
        .collect();
    let mut children: HashMap<i32, Vec<usize>> = HashMap::new();
    for (i, p) in procs.iter().enumerate() {
        children.entry(p.ppid).or_default().push(i);
    }
    let mut inside: HashSet<usize> = HashSet::new();
    let mut queue: Vec<usize> = Vec::new();
    for (i, p) in procs.iter().enumerate() {
        let root = seen.get(&p.pid) == Some(&p.start)
            || leader.is_some_and(|l| p.pgrp == l)
            || (p.alive && has_marker(p.pid, marker));
        if root && inside.insert(i) {
            queue.push(i);
        }
    }
    while let Some(i) = queue.pop() {
        for &c in children.get(&procs[i].pid).into_iter().flatten() {
            if inside.insert(c) {
                queue.push(c);
            }
        }
    }
    let mut inside: Vec<usize> = inside.into_iter().collect();
    inside.sort_unstable();
    let mut procs: Vec<Option<Proc>> = procs.into_iter().map(Some).collect();
    inside.into_iter().filter_map(|i| procs[i].take()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_last_parenthesis_of_the_name() {
        let me = std::process::id() as i32;
        let stat = read_stat(me).expect("our own stat");
        assert_eq!(stat.ppid, nix::unistd::getppid().as_raw());
        assert_eq!(stat.pgrp, nix::unistd::getpgrp().as_raw());
        assert!(stat.alive);
        // A name with spaces and parentheses does not shift the fields.
        let dir = tempfile::tempdir().expect("tempdir");
        let odd = dir.path().join("a) b (c");
        std::os::unix::fs::symlink("/bin/sleep", &odd).expect("symlink");
        let mut child = std::process::Command::new(&odd)
            .arg("30")
            .spawn()
            .expect("spawn");
        let pid = child.id() as i32;
        // Until the child has exec'd, /proc shows the forked test thread's
        // name: wait (bounded) for the program's.
        let mut comm = String::new();
        for _ in 0..500 {
            comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "a) b (c" {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(comm.trim(), "a) b (c");
        let stat = read_stat(pid).expect("the child's stat");
        assert_eq!(stat.ppid, me);
        assert_eq!(stat.start, start_time(pid).unwrap());
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn the_walk_finds_a_detached_process_by_its_marker_and_its_children_by_descent() {
        let marker = format!("{:016x}", rand::random::<u64>());
        // A process in a session of its own, with the marker, and a child
        // whose environment is cleared: found by the marker, then by descent.
        let mut child = std::process::Command::new("setsid")
            .args(["/bin/sh", "-c", "env -i sleep 30 & exec sleep 30"])
            .env(MARKER_VAR, &marker)
            .spawn()
            .expect("spawn");
        let pid = child.id() as i32;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let mut found = Vec::new();
        while found.len() < 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            found = walk(None, &HashMap::new(), &marker)
                .into_iter()
                .filter(|p| p.alive)
                .map(|p| p.pid)
                .collect();
        }
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.contains(&pid));
        assert!(walk(None, &HashMap::new(), "another").is_empty());
        for p in found {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        let _ = child.wait();
    }
}
