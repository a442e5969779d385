//! A task's descendants that detach (double fork, `setsid`, even with a
//! cleared environment) are ended with the task: on cancel, timeout, the
//! main process's exit, host shutdown and (with a cgroup) a host crash.
//! Each case runs twice: with `process_tree = "auto"` (a cgroup per task
//! where this machine allows it) and with `"walk"` (the fallback, forced).

mod common;

use std::sync::atomic::{AtomicU32, Ordering};

use common::*;
use serde_json::{Value, json};

/// A number unique to this test process and call, for `sleep 300.N`: the
/// detached process's command line carries it, so it can be found.
fn unique_secs() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    format!(
        "300.{}{:03}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A shell line that double-forks a `setsid` process (which ignores SIGTERM
/// and holds none of the task's pipes) running `sleep SECS`; `clear_env`
/// starts it with `env -i`.
fn detach(secs: &str, clear_env: bool) -> String {
    let env = if clear_env { "env -i " } else { "" };
    format!(
        "( setsid {env}/bin/sh -c 'trap \"\" TERM; : > started.{secs}; exec sleep {secs}' </dev/null >/dev/null 2>&1 & )"
    )
}

/// The live `sleep SECS` processes (not the shells on their way to it).
fn detached(secs: &str) -> Vec<i32> {
    let wanted = format!("sleep\0{secs}\0");
    pids_with(secs)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted.as_bytes())
        })
        .collect()
}

/// A shell loop waiting (at most 30 s) for a file to appear in the task's cwd.
fn wait_for(file: &str) -> String {
    format!("i=0; while [ ! -e {file} ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done")
}

fn host(mode: &str) -> TestHost {
    let mut host = TestHost::new(&format!("process_tree = \"{mode}\""));
    host.start();
    host
}

/// The cgroup v2 path of a process (`0::` line), if any.
fn cgroup_of(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_default()
        .to_owned()
}

/// Checks how the detached process was contained: in auto mode, a task
/// cgroup when this machine allows one (returns whether it did); in walk
/// mode, never a cgroup, and the task's marker variable in its environment
/// (unless it was cleared).
fn check_containment(mode: &str, pid: i32, env_kept: bool) -> bool {
    let cgroup = cgroup_of(pid);
    let in_task_cgroup = cgroup.contains("/openwork-host.");
    if mode == "walk" {
        assert!(!in_task_cgroup, "walk mode must not use a cgroup: {cgroup}");
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let marked = environ
            .split(|b| *b == 0)
            .any(|e| e.starts_with(b"OPENWORK_HOST_TASK="));
        assert_eq!(marked, env_kept, "the marker variable in walk mode");
    } else {
        // Where a cgroup can be made, auto must use one.
        assert_eq!(
            in_task_cgroup,
            cgroups_possible(),
            "auto mode: the task ran in {cgroup:?}"
        );
    }
    in_task_cgroup
}

/// Whether this process may make a cgroup v2 group beside itself (and so
/// the host it starts may).
fn cgroups_possible() -> bool {
    let Some(mount) = cgroup2_mount() else {
        return false;
    };
    let own = cgroup_of(std::process::id() as i32);
    let probe = std::path::Path::new(&mount)
        .join(own.trim_start_matches('/'))
        .join(format!("owprobe-{}", std::process::id()));
    let made = std::fs::create_dir(&probe).is_ok();
    let kill = probe.join("cgroup.kill").exists();
    let _ = std::fs::remove_dir(&probe);
    if !made || !kill {
        eprintln!("note: no cgroup can be made here; auto mode uses the walk");
    }
    made && kill
}

/// Zombie children of the host (it must reap all it has).
fn zombie_children(host_pid: u32) -> Vec<i32> {
    let mut zombies = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        if fields.first() == Some(&"Z") && fields.get(1) == Some(&host_pid.to_string().as_str()) {
            zombies.push(pid);
        }
    }
    zombies
}

/// Starts a task that detaches two processes (one with its environment
/// kept, one cleared unless `only_kept`) and then `then`; waits until both
/// run. Returns the task id and the two `sleep` markers.
async fn start_detaching(
    client: &mut Client,
    mode: &str,
    only_kept: bool,
    then: &str,
    extra: Value,
) -> (String, Vec<String>) {
    let kept = unique_secs();
    let cleared = unique_secs();
    let mut line = detach(&kept, false);
    let mut markers = vec![kept.clone()];
    if !only_kept {
        line = format!("{line}; {}", detach(&cleared, true));
        markers.push(cleared.clone());
    }
    let mut params = json!({"command": format!("{line}; echo ready; {then}")});
    if let (Some(p), Some(e)) = (params.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    let task = run(client, params).await;
    wait_until(10, "the detached processes to start", || {
        markers.iter().all(|m| detached(m).len() == 1)
    });
    for (i, marker) in markers.iter().enumerate() {
        let pid = detached(marker)[0];
        let _ = check_containment(mode, pid, i == 0);
        // It really left the task's session (and so its process group).
        let pid = nix::unistd::Pid::from_raw(pid);
        assert_eq!(nix::unistd::getsid(Some(pid)), Ok(pid));
    }
    (task, markers)
}

fn assert_all_gone(markers: &[String], when: &str) {
    for marker in markers {
        let left = detached(marker);
        assert!(
            left.is_empty(),
            "`sleep {marker}` (pids {left:?}) outlived the task {when}"
        );
    }
}

async fn cancel_case(mode: &str) {
    let host = host(mode);
    let mut client = host.connect().await;
    let (task, markers) =
        start_detaching(&mut client, mode, false, "exec sleep 300", json!({})).await;
    let record: Value = within(20, client.call("task.cancel", json!({"taskId": task})))
        .await
        .unwrap();
    assert_eq!(record["status"], "cancelled", "{record}");
    // Once cancel has answered, nothing of the task is left.
    assert_all_gone(&markers, "after task.cancel answered");
    assert_eq!(zombie_children(host.pid()), Vec::<i32>::new());
}

#[tokio::test]
async fn cancel_ends_detached_descendants_with_a_cgroup_where_possible() {
    cancel_case("auto").await;
}

#[tokio::test]
async fn cancel_ends_detached_descendants_by_walking_the_tree() {
    cancel_case("walk").await;
}

async fn timeout_case(mode: &str) {
    let host = host(mode);
    let mut client = host.connect().await;
    let (task, markers) = start_detaching(
        &mut client,
        mode,
        false,
        "exec sleep 300",
        json!({"timeoutS": 2}),
    )
    .await;
    let followed = follow(&mut client, &task, 30).await;
    let last = followed.last();
    assert!(
        last.error.as_deref().unwrap_or("").contains("timed out"),
        "{last:?}"
    );
    assert_all_gone(&markers, "after it timed out");
}

#[tokio::test]
async fn a_timeout_ends_detached_descendants_with_a_cgroup_where_possible() {
    timeout_case("auto").await;
}

#[tokio::test]
async fn a_timeout_ends_detached_descendants_by_walking_the_tree() {
    timeout_case("walk").await;
}

async fn exit_case(mode: &str) {
    let host = host(mode);
    let mut client = host.connect().await;
    // With the walk, a process that detaches *and* clears its environment
    // after the main process is gone cannot be told apart (the README says
    // so); a cgroup has no such gap.
    let only_kept = mode == "walk";
    let (task, markers) = start_detaching(
        &mut client,
        mode,
        only_kept,
        &format!("{}; echo main done", wait_for("go")),
        json!({}),
    )
    .await;
    std::fs::write(host.work.join("go"), "").unwrap();
    let followed = follow(&mut client, &task, 30).await;
    assert_eq!(followed.stream("stdout"), "ready\nmain done\n");
    assert_eq!(
        serde_json::to_value(followed.last().status).unwrap(),
        "succeeded"
    );
    assert_all_gone(&markers, "after its main process exited");
    assert_eq!(zombie_children(host.pid()), Vec::<i32>::new());
}

#[tokio::test]
async fn the_main_process_exiting_ends_detached_descendants_with_a_cgroup_where_possible() {
    exit_case("auto").await;
}

#[tokio::test]
async fn the_main_process_exiting_ends_detached_descendants_by_walking_the_tree() {
    exit_case("walk").await;
}

async fn shutdown_case(mode: &str) {
    let mut host = host(mode);
    let mut client = host.connect().await;
    let (task, markers) =
        start_detaching(&mut client, mode, false, "exec sleep 300", json!({})).await;
    let pid = detached(&markers[0])[0];
    let base = cgroup_of(pid);
    let status = host.terminate();
    assert!(status.success(), "{status:?}");
    assert_all_gone(&markers, "after the host shut down (SIGTERM)");
    // The host removed the cgroups it made.
    if base.contains("/openwork-host.") {
        let host_dir = base
            .rsplit_once('/')
            .map(|(dir, _)| dir.to_owned())
            .unwrap();
        let mount = cgroup2_mount().expect("a cgroup2 mount");
        assert!(
            !std::path::Path::new(&format!("{mount}{host_dir}")).exists(),
            "{mount}{host_dir} was left behind"
        );
    }
    let _ = task;
}

/// Where cgroup2 is mounted.
fn cgroup2_mount() -> Option<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .ok()?
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| left.split_whitespace().nth(4).map(str::to_owned))?
        })
}

#[tokio::test]
async fn host_shutdown_ends_detached_descendants_with_a_cgroup_where_possible() {
    shutdown_case("auto").await;
}

#[tokio::test]
async fn host_shutdown_ends_detached_descendants_by_walking_the_tree() {
    shutdown_case("walk").await;
}

#[tokio::test]
async fn a_crashed_host_s_watchdog_ends_detached_descendants_through_the_cgroup() {
    if !cgroups_possible() {
        eprintln!("skipped: no cgroup for tasks on this machine");
        return;
    }
    let mut host = host("auto");
    let mut client = host.connect().await;
    let (_task, markers) =
        start_detaching(&mut client, "auto", false, "exec sleep 300", json!({})).await;
    let crashed = host.pid();
    host.kill9();
    wait_until(10, "the watchdog to kill the task's cgroup", || {
        markers.iter().all(|m| detached(m).is_empty())
    });
    // The next host removes the cgroup the crashed one left.
    let mount = cgroup2_mount().expect("a cgroup2 mount");
    let own = cgroup_of(std::process::id() as i32);
    let left = std::path::Path::new(&mount)
        .join(own.trim_start_matches('/'))
        .join(format!("openwork-host.{crashed}"));
    // (Left by the crash; a host another test starts meanwhile may remove it first.)
    host.start();
    assert!(!left.exists(), "{} outlived the next start", left.display());
    assert!(host.terminate().success());
}

#[tokio::test]
async fn a_crashed_host_s_watchdog_ends_detached_descendants_that_kept_the_marker() {
    let mut host = host("walk");
    let mut client = host.connect().await;
    let (_task, markers) =
        start_detaching(&mut client, "walk", false, "exec sleep 300", json!({})).await;
    host.kill9();
    let ended = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !detached(&markers[0]).is_empty() && std::time::Instant::now() < ended {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let kept = detached(&markers[0]);
    // With the walk, one that cleared its environment is out of reach once
    // the host is gone (the README says so); it is stopped here by hand.
    for pid in detached(&markers[1]) {
        signal(pid as u32, nix::sys::signal::Signal::SIGKILL);
    }
    assert_eq!(
        kept,
        Vec::<i32>::new(),
        "the marked descendant outlived the crash"
    );
}

#[tokio::test]
async fn an_unknown_process_tree_setting_is_refused_with_the_choices() {
    let host = TestHost::new("process_tree = \"sandbox\"");
    let mut serve = std::process::Command::new(bin());
    serve
        .arg("--data-dir")
        .arg(&host.data)
        .args(["serve", "--no-mdns", "--listen", "none"]);
    let out = output_within(serve, 20);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("process_tree") && stderr.contains("walk"),
        "{stderr}"
    );
}

/// A host run as `nobody`, who may not create cgroups here: its data dir
/// and workspace made theirs. Returns the host process.
fn start_as_nobody(host: &TestHost) -> std::process::Child {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(host.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for dir in [&host.data, &host.work] {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            nix::unistd::chown(&entry.path(), Some(65534.into()), Some(65534.into())).unwrap();
        }
        nix::unistd::chown(dir.as_path(), Some(65534.into()), Some(65534.into())).unwrap();
    }
    std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", bin()])
        .arg("--data-dir")
        .arg(&host.data)
        .args(["serve", "--no-mdns", "--listen", "none", "--log", "warn"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("setpriv")
}

#[tokio::test]
async fn where_no_cgroup_can_be_made_cgroup_mode_refuses_to_start_and_auto_falls_back_to_the_walk()
{
    // `nobody` may not make groups under this process's cgroup (root's).
    let host = TestHost::new("process_tree = \"cgroup\"");
    let child = start_as_nobody(&host);
    let out = {
        let mut child = child;
        let status = wait_within(&mut child, 20);
        let stderr = read_to_end_within(child.stderr.take().unwrap(), 5);
        (status, String::from_utf8_lossy(&stderr).into_owned())
    };
    assert!(!out.0.success(), "{}", out.1);
    assert!(
        out.1.contains("`[tasks] process_tree = \"cgroup\"` but")
            && out.1.contains("set `process_tree = \"auto\"`"),
        "{}",
        out.1
    );

    let host = TestHost::new("process_tree = \"auto\"");
    let mut child = start_as_nobody(&host);
    let socket = host.socket();
    wait_until(20, "the host run by nobody", || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    // Only nobody may talk to nobody's host: through `stdio`, which runs
    // the task to its end (a timeout) before it exits.
    let (kept, cleared) = (unique_secs(), unique_secs());
    let command = format!(
        "{}; {}; echo ready; exec sleep 300",
        detach(&kept, false),
        detach(&cleared, true)
    );
    let request = json!({"jsonrpc": "2.0", "id": 1, "method": "task.run",
        "params": {"command": command, "timeoutS": 2}});
    let mut stdio = std::process::Command::new("setpriv");
    stdio
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", bin()])
        .arg("--data-dir")
        .arg(&host.data)
        .arg("stdio");
    let out = output_with_input(&mut stdio, format!("{request}\n").as_bytes(), 30);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("timed out after 2 s"), "{stdout}");
    for secs in [&kept, &cleared] {
        assert!(
            host.work.join(format!("started.{secs}")).exists(),
            "the detached `sleep {secs}` never started: {stdout}"
        );
    }
    assert_all_gone(&[kept, cleared], "after it timed out (auto, no cgroup)");
    signal(child.id(), nix::sys::signal::Signal::SIGTERM);
    assert!(wait_within(&mut child, 30).success());
}
