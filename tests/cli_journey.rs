//! A person's first steps with the command line, and the errors on the way:
//! a host that is down, a task that is not there, a revoked device, a port
//! taken, Ctrl-C, a closed pipe. Each drives the real binary against a real
//! host on loopback.

mod common;

use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use openwork_host::client::{KnownHost, KnownHosts};
use serde_json::{Value, json};

/// A client dir paired with `device`.
fn client_dir(device: &KnownHost) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut hosts = KnownHosts::load(dir.path()).unwrap();
    hosts.add(device.clone());
    hosts.save().unwrap();
    dir
}

fn client(dir: &tempfile::TempDir) -> Command {
    let mut command = Command::new(bin());
    command.args(["client", "--client-dir"]).arg(dir.path());
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn a_host_that_is_down_is_reported_at_once_with_what_to_check() {
    let mut host = TestHost::started();
    let device = host.pair_device("laptop", None).await;
    let dir = client_dir(&device);
    host.terminate();
    for args in [
        &["run", "--", "true"][..],
        &["tasks"],
        &["logs", "t_x"],
        &["logs", "t_x", "--follow"],
        &["health"],
        &["reply", "r_1", "once"],
    ] {
        let started = Instant::now();
        // Patience (minutes for `run`) would overrun this bound.
        let out = output_within(client(&dir).args(args), 10);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "cannot reach {} at {}: connection refused; is `openwork-host serve` running there?",
                device.name, device.address
            )),
            "{args:?}: {stderr}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{args:?} took {:?}",
            started.elapsed()
        );
    }
    // Every subcommand that connects takes --reconnect-timeout.
    for args in [
        &["run", "--reconnect-timeout", "3s", "--", "true"][..],
        &["tasks", "--reconnect-timeout", "3s"],
        &["logs", "t_x", "--reconnect-timeout", "3s"],
        &["health", "--reconnect-timeout", "3s"],
        &["reply", "r_1", "once", "--reconnect-timeout", "3s"],
    ] {
        let out = output_within(client(&dir).args(args), 10);
        let stderr = text(&out.stderr);
        assert!(stderr.contains("cannot reach"), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn errors_name_commands_not_json_rpc_methods() {
    let host = TestHost::started();
    let device = host.pair_device("laptop", None).await;
    let dir = client_dir(&device);
    let out = output_within(client(&dir).args(["logs", "t_nope"]), 30);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("t_nope"), "{stderr}");
    assert!(
        stderr.contains("list tasks with `openwork-host client tasks`"),
        "{stderr}"
    );
    assert!(!stderr.contains("`task.list`"), "{stderr}");
    // The protocol's own answer still names the method.
    let mut owner = host.connect().await;
    let error = within(
        10,
        owner.call::<_, Value>("task.get", json!({"taskId": "t_nope"})),
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("not found"), "{error}");
}

/// Reads a child's pipe on a thread; the text so far is in the returned buffer.
fn collect(pipe: impl std::io::Read + Send + 'static) -> std::sync::Arc<std::sync::Mutex<String>> {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = std::sync::Arc::clone(&seen);
    std::thread::spawn(move || {
        let mut pipe = pipe;
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                return;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    seen
}

type Seen = std::sync::Arc<std::sync::Mutex<String>>;

/// Starts `command` with stdout and stderr each collected as it arrives, and
/// waits (bounded) until stdout shows `first`.
fn spawn_until(command: &mut Command, first: &str) -> (std::process::Child, Seen, Seen) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = collect(child.stdout.take().unwrap());
    let stderr = collect(child.stderr.take().unwrap());
    wait_until(20, "the task's first line", || {
        stdout.lock().unwrap().contains(first)
    });
    (child, stdout, stderr)
}

async fn task_status(owner: &mut Client, task: &str) -> String {
    let record: Value = within(10, owner.call("task.get", json!({"taskId": task})))
        .await
        .unwrap();
    record["status"].as_str().unwrap().to_owned()
}

async fn only_task(owner: &mut Client) -> String {
    let mut task = None;
    for _ in 0..250 {
        let list: Value = within(10, owner.call("task.list", json!({})))
            .await
            .unwrap();
        if let Some(id) = list["tasks"][0]["taskId"].as_str() {
            task = Some(id.to_owned());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.expect("the client started a task")
}

#[tokio::test]
async fn a_revoked_device_is_told_to_pair_again_or_forget_the_host_and_its_task_runs_on() {
    let host = TestHost::started();
    let device = host.pair_device("laptop", None).await;
    let dir = client_dir(&device);
    let mut owner = host.connect().await;
    let (mut running, _stdout, stderr) = spawn_until(
        client(&dir).args([
            "run",
            "--",
            "sh",
            "-c",
            "echo started; sleep 2; echo finished",
        ]),
        "started",
    );
    let task = only_task(&mut owner).await;
    let revoked = output_within(
        Command::new(bin())
            .args(["devices", "revoke", &device.device_id, "--data-dir"])
            .arg(&host.data),
        30,
    );
    assert!(revoked.status.success(), "{}", text(&revoked.stderr));
    let status = wait_within(&mut running, 20);
    assert_eq!(status.code(), Some(1));
    let said = stderr.lock().unwrap().clone();
    let expected = "this device's pairing was revoked by the host's owner; pair again with `openwork-host client pair …`";
    assert!(said.contains(expected), "{said}");
    assert!(
        said.contains(&format!("`openwork-host client forget {}`", device.name)),
        "{said}"
    );
    for raw in ["close_notify", "rustls", "os error"] {
        assert!(!said.contains(raw), "{raw} in {said}");
    }
    // The task is the host's: it runs on to its end, output and all.
    assert_eq!(task_status(&mut owner, &task).await, "running");
    let _: Value = within(
        10,
        owner.call("task.subscribe", json!({"taskId": task, "fromSeq": 1})),
    )
    .await
    .unwrap();
    let done = follow(&mut owner, &task, 20).await;
    assert_eq!(done.last().status.as_str(), "succeeded");
    assert_eq!(done.stream("stdout"), "started\nfinished\n");
    // A later command is told the same.
    let later = output_within(client(&dir).arg("tasks"), 30);
    assert!(
        text(&later.stderr).contains(expected),
        "{}",
        text(&later.stderr)
    );
}

#[tokio::test]
async fn ctrl_c_in_client_run_cancels_the_task_and_exits_130() {
    let host = TestHost::started();
    let device = host.pair_device("laptop", None).await;
    let dir = client_dir(&device);
    let mut owner = host.connect().await;
    let (mut running, _stdout, stderr) = spawn_until(
        client(&dir).args(["run", "--", "sh", "-c", "echo started; sleep 30"]),
        "started",
    );
    let task = only_task(&mut owner).await;
    signal(running.id(), nix::sys::signal::Signal::SIGINT);
    let status = wait_within(&mut running, 20);
    assert_eq!(status.code(), Some(130), "{}", stderr.lock().unwrap());
    assert_eq!(task_status(&mut owner, &task).await, "cancelled");
}

#[tokio::test]
async fn client_run_says_on_a_terminal_which_directory_the_task_runs_in() {
    let host = TestHost::started();
    let device = host.pair_device("laptop", None).await;
    let dir = client_dir(&device);
    std::fs::create_dir(host.work.join("project")).unwrap();
    let command = format!(
        "{} client --client-dir {} run --cwd project -- pwd",
        bin(),
        dir.path().display()
    );
    let out = output_with_input_held_open(
        Command::new("script").args(["-qec", &command, "/dev/null"]),
        b"",
        30,
    );
    let shown = text(&out.stdout).replace('\r', "");
    let project = host.work.join("project");
    assert!(
        shown.contains(&format!("runs on {} in {}", device.name, project.display())),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("{}\n", project.display())),
        "{shown}"
    );
    // Off a terminal, stderr is the task's alone.
    let out = output_within(
        client(&dir).args(["run", "--cwd", "project", "--", "sh", "-c", "echo err >&2"]),
        30,
    );
    assert_eq!(text(&out.stderr), "err\n");
}

#[tokio::test]
async fn pending_devices_go_to_stdout_and_hosts_have_a_header() {
    let host = TestHost::started();
    let device = host.pair_device("laptop", None).await;
    let dir = client_dir(&device);
    let hosts = output_within(client(&dir).arg("hosts"), 30);
    let listed = text(&hosts.stdout);
    let mut lines = listed.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "ADDRESS", "DEVICE", "SCOPES"], "{listed}");
    assert!(lines.next().unwrap().starts_with(&device.name), "{listed}");

    // A second device waits for approval.
    let mut owner = host.connect().await;
    let window: Value = within(10, owner.call("pairing.open", json!({"ttlS": 60})))
        .await
        .unwrap();
    let request = openwork_host::client::pair::PairRequest {
        address: host.tls_address().await,
        code: window["code"].as_str().unwrap().to_owned(),
        device_name: "waiting-phone".to_owned(),
        scopes: None,
        expected_fingerprint: None,
        approval_timeout: Duration::from_secs(30),
    };
    let pairing = tokio::spawn(async move { openwork_host::client::pair::pair(&request).await });
    let requested = within(30, owner.next_notification()).await.unwrap();
    assert_eq!(requested["method"], "pairing.requested", "{requested}");
    let pending = output_within(
        Command::new(bin())
            .args(["devices", "pending", "--data-dir"])
            .arg(&host.data),
        30,
    );
    let listed = text(&pending.stdout);
    assert!(
        listed.contains("Device \"waiting-phone\"")
            && listed.contains(requested["params"]["requestId"].as_str().unwrap()),
        "stdout: {listed}\nstderr: {}",
        text(&pending.stderr)
    );
    answer_request(&mut owner, &requested, "pairing.deny").await;
    assert!(within(10, pairing).await.unwrap().is_err());
}

#[test]
fn a_taken_port_is_said_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let data = tempfile::tempdir().unwrap();
    let out = output_within(
        Command::new(bin())
            .args(["serve", "--no-mdns", "--listen", &address, "--data-dir"])
            .arg(data.path()),
        30,
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains(&address), "{stderr}");
}

#[test]
fn the_serve_log_has_no_colour_codes_off_a_terminal() {
    let host = TestHost::new("");
    let mut serve = host
        .serve_command()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = collect(serve.stderr.take().unwrap());
    wait_until(20, "the serving line", || {
        log.lock().unwrap().contains("is serving")
    });
    signal(serve.id(), nix::sys::signal::Signal::SIGTERM);
    wait_within(&mut serve, 30);
    let log = log.lock().unwrap().clone();
    assert!(!log.contains('\x1b'), "{log:?}");
}

/// A pipe whose reader is gone: every write to it fails with EPIPE.
fn closed_pipe() -> OwnedFd {
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    write
}

/// Runs `command` with its stdout a pipe nobody reads (`| head` after
/// `head` is done); its exit code and stderr.
fn with_closed_stdout(command: &mut Command) -> (Option<i32>, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::from(closed_pipe()))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = read_to_end_within(child.stderr.take().unwrap(), 30);
    (wait_within(&mut child, 30).code(), text(&stderr))
}

#[tokio::test]
async fn every_command_ends_quietly_when_its_reader_goes_away() {
    let host = TestHost::started();
    let device = host.pair_device("laptop", None).await;
    let dir = client_dir(&device);
    let mut owner = host.connect().await;
    run(&mut owner, json!({"command": "seq 1 5000"})).await;
    let data = host.data.display().to_string();
    let client_dir = dir.path().display().to_string();
    for args in [
        vec!["status", "--json", "--data-dir", &data],
        vec!["status", "--data-dir", &data],
        vec!["doctor", "--data-dir", &data],
        vec!["devices", "list", "--data-dir", &data],
        vec!["permissions", "audit", "--data-dir", &data],
        vec!["service", "install", "--print"],
        vec!["pair", "--detach", "--replace", "--data-dir", &data],
        vec![
            "pair",
            "--detach",
            "--json",
            "--replace",
            "--data-dir",
            &data,
        ],
        vec![
            "conformance",
            "--data-dir",
            &data,
            "fixtures/ids.json",
            "fixtures/health.json",
        ],
        vec!["client", "--client-dir", &client_dir, "hosts"],
        vec!["client", "--client-dir", &client_dir, "tasks"],
        vec!["client", "--client-dir", &client_dir, "health", "--json"],
        vec![
            "client",
            "--client-dir",
            &client_dir,
            "run",
            "--",
            "seq",
            "1",
            "5000",
        ],
    ] {
        let (code, stderr) = with_closed_stdout(Command::new(bin()).args(&args));
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
        assert!(matches!(code, Some(0..=3)), "{args:?}: {code:?} {stderr}");
    }
    // `client logs` stops paging once nobody reads.
    let list: Value = within(10, owner.call("task.list", json!({})))
        .await
        .unwrap();
    let task = list["tasks"][0]["taskId"].as_str().unwrap().to_owned();
    let (code, stderr) = with_closed_stdout(client(&dir).args(["logs", &task]));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

#[test]
fn pairing_messages_round_up_and_leave_out_an_empty_reason() {
    use openwork_host::pairing::PairingError;
    let paused = PairingError::Paused {
        retry_after: Duration::from_millis(1200),
    };
    assert!(paused.to_string().contains("wait 2s"), "{paused}");
    let closed = PairingError::ClosedBeforeApproval(String::new()).to_string();
    assert_eq!(
        closed,
        "the pairing window closed before the device was approved"
    );
    let closed = PairingError::ClosedBeforeApproval("expired".into()).to_string();
    assert!(closed.ends_with("approved (expired)"), "{closed}");
}
