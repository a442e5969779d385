//! Clients that survive dropped connections and host restarts: a proxy that
//! cuts connections at random between the client library and the host's TLS
//! port, host restarts under `client logs --follow`, and `task.run` sent
//! again after a drop. Real TLS on loopback, a real host process.

mod common;
#[path = "common/proxy.rs"]
mod proxy;

use std::collections::HashMap;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use openwork_host::client::{HostSession, KnownHost, KnownHosts, Notice, ReconnectPolicy};
use openwork_host::protocol::{TaskRunParams, TaskStatus, TaskUpdate};
use proxy::{Faults, Proxy};
use serde_json::{Value, json};

/// Fast retries: the host is on this machine.
fn quick_policy() -> ReconnectPolicy {
    ReconnectPolicy {
        first_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(200),
        give_up_after: Duration::from_secs(60),
        connect_timeout: Duration::from_secs(5),
        liveness: Duration::from_secs(5),
        find_on_lan: None,
    }
}

fn via(device: &KnownHost, proxy: &Proxy) -> KnownHost {
    KnownHost {
        address: proxy.address.clone(),
        ..device.clone()
    }
}

fn seed() -> u64 {
    let seed = std::env::var("RECONNECT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("proxy seed {seed} (set RECONNECT_SEED={seed} to repeat this run)");
    seed
}

/// What task `k` prints and how it ends.
struct Expected {
    command: String,
    stdout: String,
    stderr: String,
    status: TaskStatus,
    exit_code: Option<i32>,
    signal: Option<&'static str>,
}

fn expected(k: usize) -> Expected {
    let (ending, status, exit_code, signal) = match k % 5 {
        0 | 3 => ("exit 0", TaskStatus::Succeeded, Some(0), None),
        1 => ("exit 1", TaskStatus::Failed, Some(1), None),
        2 => ("exit 42", TaskStatus::Failed, Some(42), None),
        _ => ("kill -TERM $$", TaskStatus::Failed, None, Some("SIGTERM")),
    };
    Expected {
        command: format!(
            "printf 'task {k} says hello\\n'; printf 'task {k} complains\\n' >&2; printf 'task {k} %s\\n' done; {ending}"
        ),
        stdout: format!("task {k} says hello\ntask {k} done\n"),
        stderr: format!("task {k} complains\n"),
        status,
        exit_code,
        signal,
    }
}

#[derive(Default)]
struct Received {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    seqs: Vec<u64>,
    last: Option<TaskUpdate>,
}

/// Runs tasks `range` through one reconnecting session, `window` at a time.
async fn run_tasks(
    host: KnownHost,
    range: std::ops::Range<usize>,
    window: usize,
) -> (
    HashMap<usize, Received>,
    openwork_host::client::reconnect::LinkStats,
) {
    let mut session = HostSession::open(host, "flaky-client", quick_policy())
        .await
        .expect("open a session through the proxy");
    let mut by_task: HashMap<String, usize> = HashMap::new();
    let mut received: HashMap<usize, Received> = HashMap::new();
    let mut next = range.start;
    let mut running = 0;
    while next < range.end || running > 0 {
        while running < window && next < range.end {
            let params = TaskRunParams {
                command: Some(expected(next).command),
                ..TaskRunParams::default()
            };
            let started = session.run_task(params).await.expect("task.run");
            by_task.insert(started.task_id, next);
            received.insert(next, Received::default());
            next += 1;
            running += 1;
        }
        match session.next_notice().await.expect("next notice") {
            Notice::Chunk(chunk) => {
                let k = by_task[&chunk.task_id];
                let got = received.get_mut(&k).unwrap();
                got.seqs.push(chunk.seq);
                let bytes = openwork_host::tasks::chunk::chunk_bytes(&chunk);
                match chunk.stream {
                    openwork_host::protocol::LogStream::Stderr => got.stderr.extend(bytes),
                    _ => got.stdout.extend(bytes),
                }
            }
            Notice::Updated(update) if update.status.is_final() => {
                let k = by_task[&update.task_id];
                let got = received.get_mut(&k).unwrap();
                assert!(got.last.is_none(), "task {k} ended twice: {update:?}");
                got.last = Some(update.clone());
                running -= 1;
            }
            _ => {}
        }
    }
    (received, session.stats())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tasks_through_a_connection_cutting_proxy_arrive_whole_and_once() {
    const CLIENTS: usize = 8;
    const PER_CLIENT: usize = 125;
    let mut host = TestHost::new("max_concurrent = 16\n[pairing]\nfailure_pause_ms = 50\n");
    host.start();
    let device = host.pair_device("flaky", None).await;
    let proxy = Proxy::start(
        &device.address,
        Faults::RandomCut {
            min: 512,
            max: 24 * 1024,
        },
        seed(),
    )
    .await;
    let started = Instant::now();
    let runs: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let host = via(&device, &proxy);
            tokio::spawn(run_tasks(host, c * PER_CLIENT..(c + 1) * PER_CLIENT, 6))
        })
        .collect();
    let finished =
        tokio::time::timeout(Duration::from_secs(120), futures::future::join_all(runs)).await;
    let Ok(finished) = finished else {
        // Say which tasks never ended, as the host sees them.
        let mut owner = host.connect().await;
        let mut stuck = Vec::new();
        for status in ["queued", "running"] {
            let list: Value = within(10, owner.call("task.list", json!({"status": status})))
                .await
                .unwrap();
            stuck.extend(list["tasks"].as_array().unwrap().clone());
        }
        panic!("the clients did not finish within 120 s; unfinished on the host: {stuck:?}");
    };
    let mut all = HashMap::new();
    let mut reconnects = 0;
    let mut retried = 0;
    for run in finished {
        let (received, stats) = run.expect("client task");
        reconnects += stats.reconnects;
        retried += stats.retried_calls;
        all.extend(received);
    }
    eprintln!(
        "{} tasks in {:.1} s; the proxy accepted {} connections and cut {}; clients reconnected {} times and sent {} calls again",
        all.len(),
        started.elapsed().as_secs_f64(),
        proxy.accepted(),
        proxy.cuts(),
        reconnects,
        retried
    );
    assert_eq!(all.len(), CLIENTS * PER_CLIENT);
    for (k, got) in &all {
        let want = expected(*k);
        assert_eq!(
            String::from_utf8_lossy(&got.stdout),
            want.stdout,
            "task {k} stdout"
        );
        assert_eq!(
            String::from_utf8_lossy(&got.stderr),
            want.stderr,
            "task {k} stderr"
        );
        let seqs: Vec<u64> = (1..=got.seqs.len() as u64).collect();
        assert_eq!(got.seqs, seqs, "task {k}: every chunk once, in order");
        let last = got.last.as_ref().expect("a final status");
        assert_eq!(last.status, want.status, "task {k}: {last:?}");
        assert_eq!(last.exit_code, want.exit_code, "task {k}: {last:?}");
        assert_eq!(last.signal.as_deref(), want.signal, "task {k}: {last:?}");
    }
    // The drops really happened, and no task was started twice.
    assert!(proxy.cuts() >= 20, "only {} cuts", proxy.cuts());
    assert!(reconnects >= 20, "only {reconnects} reconnects");
    let mut owner = host.connect().await;
    let metrics: Value = within(10, owner.call("metrics.get", json!({})))
        .await
        .unwrap();
    let tasks = &metrics["tasks"];
    assert_eq!(
        tasks["succeeded"].as_u64().unwrap() + tasks["failed"].as_u64().unwrap(),
        (CLIENTS * PER_CLIENT) as u64,
        "exactly one task per task.run: {tasks}"
    );
    assert_eq!(tasks["succeeded"], (CLIENTS * PER_CLIENT * 2 / 5) as u64);
    for other in ["queued", "running", "cancelled", "interrupted"] {
        assert_eq!(tasks[other], 0, "{other}: {tasks}");
    }
}

/// A paired client dir whose host is reached through `proxy`.
fn client_dir(device: &KnownHost, proxy: &Proxy) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut hosts = KnownHosts::load(dir.path()).unwrap();
    hosts.add(via(device, proxy));
    hosts.save().unwrap();
    dir
}

/// Reads a child's stdout on a thread, so that the test can look at it as it comes.
fn collect(child: &mut Child) -> Arc<Mutex<Vec<u8>>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().unwrap();
    let sink = Arc::clone(&out);
    std::thread::spawn(move || {
        let mut buf = [0u8; 64 * 1024];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                return;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    out
}

fn stderr_of(child: &mut Child) -> Arc<Mutex<Vec<u8>>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let mut stderr = child.stderr.take().unwrap();
    let sink = Arc::clone(&out);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                return;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    out
}

/// Waits (bounded) for a child to exit.
fn exit_code(child: &mut Child, secs: u64) -> Option<i32> {
    let mut status = None;
    wait_until(secs, "the client to exit", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status.and_then(|s| s.code())
}

fn client(dir: &tempfile::TempDir, args: &[&str]) -> Child {
    Command::new(bin())
        .args(["client", "--client-dir"])
        .arg(dir.path())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The whole stored output of a task, through the local socket.
async fn stored_output(host: &TestHost, task: &str) -> String {
    let mut owner = host.connect().await;
    let mut out = Vec::new();
    let mut next = 1;
    loop {
        let page: Value = within(
            10,
            owner.call(
                "task.logs",
                json!({"taskId": task, "fromSeq": next, "limit": 1000}),
            ),
        )
        .await
        .unwrap();
        for chunk in page["chunks"].as_array().unwrap() {
            let chunk = serde_json::from_value(chunk.clone()).unwrap();
            out.extend(openwork_host::tasks::chunk::chunk_bytes(&chunk));
        }
        if page["done"] == true || page["chunks"].as_array().unwrap().is_empty() {
            return String::from_utf8(out).unwrap();
        }
        next = page["nextSeq"].as_u64().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_of_a_finished_task_resumes_without_loss_after_the_host_is_killed_mid_stream() {
    let mut host = TestHost::new("[pairing]\nfailure_pause_ms = 50\n");
    host.start();
    let device = host.pair_device("laptop", None).await;
    let mut owner = host.connect().await;
    let task = run(&mut owner, json!({"command": "seq 1 200000"})).await;
    assert_eq!(
        follow(&mut owner, &task, 30).await.last().status,
        TaskStatus::Succeeded
    );
    drop(owner);
    let expected: String = (1..=200_000).map(|i| format!("{i}\n")).collect();

    // The proxy hands the client only the first 256 KiB of the host's bytes.
    let proxy = Proxy::start(&device.address, Faults::StallAfter { bytes: 256 * 1024 }, 1).await;
    let dir = client_dir(&device, &proxy);
    let mut logs = client(
        &dir,
        &["logs", &task, "--follow", "--reconnect-timeout", "60s"],
    );
    let stdout = collect(&mut logs);
    let stderr = stderr_of(&mut logs);
    wait_until(20, "the stream to stall midway", || proxy.stalls() >= 1);
    wait_until(10, "some output", || !stdout.lock().unwrap().is_empty());
    assert!(
        logs.try_wait().unwrap().is_none(),
        "the client is mid-stream"
    );
    let before = stdout.lock().unwrap().len();
    assert!(before < expected.len() / 2, "{before} bytes already");

    host.kill9();
    proxy.set_faults(Faults::None);
    host.start();
    proxy.set_upstream(&host.tls_address().await);

    assert_eq!(exit_code(&mut logs, 60), Some(0));
    wait_until(10, "the whole output", || {
        stdout.lock().unwrap().len() >= expected.len()
    });
    let got = String::from_utf8(stdout.lock().unwrap().clone()).unwrap();
    assert!(
        got == expected,
        "{} bytes, expected {}",
        got.len(),
        expected.len()
    );
    let stderr = String::from_utf8_lossy(&stderr.lock().unwrap()).into_owned();
    assert!(stderr.contains("the connection dropped"), "{stderr}");
    assert!(stderr.contains("reconnected to"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_of_a_running_task_gets_all_its_output_and_its_end_across_a_host_crash() {
    let mut host = TestHost::new("[pairing]\nfailure_pause_ms = 50\n");
    host.start();
    let device = host.pair_device("laptop", None).await;
    let mut owner = host.connect().await;
    let task = run(
        &mut owner,
        json!({"command": "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); echo line $i; sleep 0.005; done"}),
    )
    .await;
    drop(owner);
    let proxy = Proxy::start(&device.address, Faults::None, 2).await;
    let dir = client_dir(&device, &proxy);
    let mut logs = client(
        &dir,
        &["logs", &task, "--follow", "--reconnect-timeout", "60s"],
    );
    let stdout = collect(&mut logs);
    let stderr = stderr_of(&mut logs);
    wait_until(20, "twenty lines", || {
        stdout
            .lock()
            .unwrap()
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            >= 20
    });
    // SIGKILL: the task dies with the host and is marked interrupted at the next start.
    host.kill9();
    host.start();
    proxy.set_upstream(&host.tls_address().await);

    assert_eq!(
        exit_code(&mut logs, 60),
        Some(1),
        "an interrupted task fails"
    );
    let stored = stored_output(&host, &task).await;
    wait_until(10, "the whole output", || {
        stdout.lock().unwrap().len() >= stored.len()
    });
    let got = String::from_utf8(stdout.lock().unwrap().clone()).unwrap();
    assert_eq!(got, stored, "exactly what the host kept, once");
    let lines = got.lines().count();
    assert!(lines >= 20);
    let numbered: String = (1..=lines).map(|i| format!("line {i}\n")).collect();
    assert_eq!(got, numbered);
    let stderr = String::from_utf8_lossy(&stderr.lock().unwrap()).into_owned();
    assert!(stderr.contains("reconnected to"), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_run_rides_out_a_cut_and_the_task_runs_once() {
    let mut host = TestHost::new("[pairing]\nfailure_pause_ms = 50\n");
    host.start();
    let device = host.pair_device("laptop", None).await;
    let proxy = Proxy::start(&device.address, Faults::None, 3).await;
    let dir = client_dir(&device, &proxy);
    let mut run = client(
        &dir,
        &[
            "run",
            "--",
            "sh",
            "-c",
            "for i in $(seq 1 60); do echo line $i; sleep 0.01; done; exit 3",
        ],
    );
    let stdout = collect(&mut run);
    let stderr = stderr_of(&mut run);
    wait_until(20, "ten lines", || {
        stdout
            .lock()
            .unwrap()
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            >= 10
    });
    proxy.cut_all();
    assert_eq!(exit_code(&mut run, 60), Some(3));
    wait_until(10, "the whole output", || {
        stdout
            .lock()
            .unwrap()
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            >= 60
    });
    let expected: String = (1..=60).map(|i| format!("line {i}\n")).collect();
    assert_eq!(
        String::from_utf8(stdout.lock().unwrap().clone()).unwrap(),
        expected
    );
    assert!(proxy.cuts() >= 1);
    let stderr = String::from_utf8_lossy(&stderr.lock().unwrap()).into_owned();
    assert!(stderr.contains("reconnected to"), "{stderr}");
    let mut owner = host.connect().await;
    let list: Value = within(10, owner.call("task.list", json!({})))
        .await
        .unwrap();
    assert_eq!(list["tasks"].as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_run_sent_again_after_a_drop_returns_the_first_task() {
    let mut host = TestHost::new("[pairing]\nfailure_pause_ms = 50\n");
    host.start();
    let device = host.pair_device("phone", None).await;
    let params = json!({"command": "echo once", "idempotencyKey": "k-drop-1"});

    // The request goes out, and the connection drops before the answer is read.
    let mut first = device_session(&device).await;
    first
        .send(&json!({"jsonrpc": "2.0", "id": 1, "method": "task.run", "params": params}))
        .await
        .unwrap();
    drop(first);

    let mut again = device_session(&device).await;
    let retried: Value = within(10, again.call("task.run", params.clone()))
        .await
        .unwrap();
    let task_id = retried["taskId"].as_str().unwrap().to_owned();
    // Two more connections send it at the same moment.
    let (mut a, mut b) = (device_session(&device).await, device_session(&device).await);
    let (ra, rb) = tokio::join!(
        a.call::<_, Value>("task.run", params.clone()),
        b.call::<_, Value>("task.run", params.clone())
    );
    assert_eq!(ra.unwrap()["taskId"], task_id.as_str());
    assert_eq!(rb.unwrap()["taskId"], task_id.as_str());
    // The same key for something else is refused.
    let err = within(
        10,
        again.call::<_, Value>(
            "task.run",
            json!({"command": "echo other", "idempotencyKey": "k-drop-1"}),
        ),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("already used"), "{err}");

    let mut owner = host.connect().await;
    let list: Value = within(10, owner.call("task.list", json!({})))
        .await
        .unwrap();
    let tasks = list["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1, "{list}");
    assert_eq!(tasks[0]["taskId"], task_id.as_str());
    let done = follow(&mut again, &task_id, 20).await;
    assert_eq!(done.last().status, TaskStatus::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_cannot_reconnect_gives_up_in_time_and_says_what_to_check() {
    let mut host = TestHost::new("[pairing]\nfailure_pause_ms = 50\n");
    host.start();
    let device = host.pair_device("laptop", None).await;
    let mut owner = host.connect().await;
    let task = run(&mut owner, json!({"command": "echo started; sleep 30"})).await;
    drop(owner);
    let proxy = Proxy::start(&device.address, Faults::None, 4).await;
    let dir = client_dir(&device, &proxy);
    let mut logs = client(
        &dir,
        &["logs", &task, "--follow", "--reconnect-timeout", "2s"],
    );
    let stdout = collect(&mut logs);
    let stderr = stderr_of(&mut logs);
    wait_until(20, "the first line", || !stdout.lock().unwrap().is_empty());
    host.kill9();
    let lost = Instant::now();
    let code = exit_code(&mut logs, 30);
    assert_ne!(code, Some(0));
    assert!(
        lost.elapsed() < Duration::from_secs(20),
        "gave up after {:?}",
        lost.elapsed()
    );
    let stderr = String::from_utf8_lossy(&stderr.lock().unwrap()).into_owned();
    assert!(stderr.contains("could not reconnect within"), "{stderr}");
    assert!(stderr.contains("openwork-host status"), "{stderr}");
    assert!(stderr.contains(&proxy.address), "{stderr}");
}
