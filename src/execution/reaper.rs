//! The reaper: a tiny watchdog process that kills every task's process group
//! and cgroup if the host dies without cleaning up (even by SIGKILL).
//!
//! It reads `add PGID` / `del PGID`, `cg PATH` / `uncg PATH` and
//! `mark VALUE` / `unmark VALUE` lines from a pipe whose write end only the
//! host holds. When the host dies, the kernel closes that pipe, the reaper
//! reads end-of-file and kills every group still registered: a cgroup through
//! its `cgroup.kill`, which also ends what left the process group; without
//! one, every process whose environment still has a registered task marker
//! (`OPENWORK_HOST_TASK`, see `super::tree`), then the process groups. It is a POSIX sh
//! script so that it needs nothing but `/bin/sh`, and it ignores the terminal's
//! signals so that Ctrl-C on `serve` does not take it down first.

use parking_lot::Mutex;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};

const SCRIPT: &str = r#"
trap '' HUP INT TERM QUIT
groups=' '
cgroups=' '
marks=' '
while IFS=' ' read -r op arg; do
  case "$op" in
    add) groups="$groups$arg " ;;
    del) kept=' '
         for g in $groups; do [ "$g" = "$arg" ] || kept="$kept$g "; done
         groups=$kept ;;
    cg) cgroups="$cgroups$arg " ;;
    uncg) kept=' '
         for c in $cgroups; do [ "$c" = "$arg" ] || kept="$kept$c "; done
         cgroups=$kept ;;
    mark) marks="$marks$arg " ;;
    unmark) kept=' '
         for m in $marks; do [ "$m" = "$arg" ] || kept="$kept$m "; done
         marks=$kept ;;
  esac
done
for c in $cgroups; do { echo 1 > "$c/cgroup.kill"; } 2>/dev/null; done
pattern=''
for m in $marks; do pattern="$pattern${pattern:+|}$m"; done
if [ -n "$pattern" ]; then
  for f in /proc/[0-9]*/environ; do
    if tr '\0' '\n' < "$f" 2>/dev/null | grep -qxE "OPENWORK_HOST_TASK=($pattern)"; then
      p=${f#/proc/}; kill -s KILL "${p%/environ}" 2>/dev/null
    fi
  done
fi
for g in $groups; do kill -s KILL -- "-$g" 2>/dev/null; done
"#;

/// A handle on the reaper process.
pub struct Reaper {
    state: Mutex<Option<(Child, ChildStdin)>>,
}

impl Reaper {
    /// Starts the reaper; if it cannot start, tasks still run, without the crash guard.
    pub fn start() -> Reaper {
        let spawned = Command::new("/bin/sh")
            .arg("-c")
            .arg(SCRIPT)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
        let state = match spawned {
            Ok(mut child) => child.stdin.take().map(|stdin| (child, stdin)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the reaper: tasks may outlive a crashed host");
                None
            }
        };
        Reaper {
            state: Mutex::new(state),
        }
    }

    /// Whether the reaper is running.
    pub fn is_running(&self) -> bool {
        self.state.lock().is_some()
    }

    fn send(&self, line: &str) {
        let mut state = self.state.lock();
        if let Some((_, stdin)) = state.as_mut()
            && let Err(e) = stdin.write_all(line.as_bytes())
        {
            tracing::warn!(error = %e, "the reaper is gone: tasks may outlive a crashed host");
            *state = None;
        }
    }

    /// Registers a task's process group.
    pub fn watch(&self, pgid: i32) {
        self.send(&format!("add {pgid}\n"));
    }

    /// Registers a task's cgroup (a path without whitespace, see `super::tree`).
    pub fn watch_cgroup(&self, dir: &std::path::Path) {
        self.send(&format!("cg {}\n", dir.display()));
    }

    /// Unregisters a cgroup once the task is over.
    pub fn forget_cgroup(&self, dir: &std::path::Path) {
        self.send(&format!("uncg {}\n", dir.display()));
    }

    /// Registers a task's marker value (hexadecimal, see `super::tree`).
    pub fn watch_marker(&self, marker: &str) {
        self.send(&format!("mark {marker}\n"));
    }

    /// Unregisters a marker once the task is over.
    pub fn forget_marker(&self, marker: &str) {
        self.send(&format!("unmark {marker}\n"));
    }

    /// Unregisters a process group once the task is over.
    pub fn forget(&self, pgid: i32) {
        self.send(&format!("del {pgid}\n"));
    }

    /// Stops the reaper: closing its input makes it kill whatever is still
    /// registered (nothing, after a clean shutdown) and exit.
    pub fn stop(&self) {
        if let Some((mut child, stdin)) = self.state.lock().take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.stop();
    }
}
