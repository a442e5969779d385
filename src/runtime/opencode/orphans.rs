//! Finds and stops what a dead OpenCode server left running.
//!
//! OpenCode starts each tool (a `bash` command, say) in a process group of its
//! own, so stopping the server's group does not stop them, and once the
//! server is gone they belong to init. Every process the server starts
//! inherits its environment, so the host marks the server with a variable
//! whose value is unique to that run, and afterwards stops every process that
//! still carries it.

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Pid, getpgid, getpgrp};

/// The environment variable that marks a server's descendants.
pub(super) const MARKER_VAR: &str = "OPENWORK_HOST_OPENCODE_RUN";

/// Pids of live processes whose environment holds `MARKER_VAR=value`.
pub(super) fn marked(value: &str) -> Vec<i32> {
    let needle = format!("{MARKER_VAR}={value}");
    let needle = needle.as_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|environ| environ.split(|b| *b == 0).any(|entry| entry == needle))
        })
        .collect()
}

/// Stops every process marked with `value` (and its process group, unless
/// that group is the host's own); returns how many were found.
pub(super) fn stop_marked(value: &str) -> usize {
    let own_group = getpgrp();
    let pids = marked(value);
    for &pid in &pids {
        let pid = Pid::from_raw(pid);
        match getpgid(Some(pid)) {
            Ok(group) if group != own_group && group.as_raw() > 1 => {
                let _ = killpg(group, Signal::SIGKILL);
            }
            _ => {
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
    }
    pids.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marked_processes_in_their_own_group_are_found_and_stopped() {
        use std::os::unix::process::CommandExt;
        let value = format!("test-{}", std::process::id());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env(MARKER_VAR, &value)
            .process_group(0)
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        // Bounded: under load /proc may lag behind the spawn for a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut found = marked(&value);
        while found != vec![pid] && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
            found = marked(&value);
        }
        assert_eq!(found, vec![pid]);
        assert!(marked("another-run").is_empty());
        assert_eq!(stop_marked(&value), 1);
        let status = child.wait().expect("wait");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
    }
}
