//! The short compressed-week soak (`scripts/soak`'s CI run): a real host and
//! four phone processes, each behind a faulty network path on loopback,
//! through clean cuts, silent roams, links down past the client's liveness,
//! SIGSTOP sleeps, host SIGTERM and SIGKILL restarts and slow links. No task
//! may fail because of a disconnect, and the report's counts must add up.

mod common;
#[path = "../src/bin/openwork-soak/path.rs"]
#[allow(dead_code)]
mod path;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use openwork_host::client::{HostSession, KnownHost, ReconnectPolicy, SessionError};
use serde_json::{Value, json};

#[test]
fn a_compressed_week_loses_no_task_to_a_disconnect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report_path = dir.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_openwork-soak"))
        .args(["--seconds", "75", "--seed", "7", "--clients", "4"])
        .arg("--report")
        .arg(&report_path)
        .arg("--host-bin")
        .arg(env!("CARGO_BIN_EXE_openwork-host"))
        .output()
        .expect("run the soak");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}\n{stderr}");
    let report: Value = serde_json::from_slice(
        &std::fs::read(&report_path).unwrap_or_else(|e| panic!("no report ({e}): {stderr}")),
    )
    .expect("the report is JSON");

    // Enough work, and every fault really happened.
    let tasks = report["tasks"].as_u64().expect("tasks");
    assert!(tasks >= 200, "only {tasks} tasks: {report}");
    for fault in [
        "cut",
        "roam",
        "down",
        "down_long",
        "sleep",
        "slow",
        "stall",
        "restart_term",
        "restart_kill",
    ] {
        assert!(
            report["faults"][fault].as_u64().unwrap_or(0) >= 1,
            "fault {fault} never happened: {}",
            report["faults"]
        );
    }
    assert!(report["reconnects"].as_u64().unwrap_or(0) >= 4, "{report}");

    // The counts add up: one outcome per task the phones started, and one
    // task on the host per title at most.
    assert_eq!(report["consistent"], true, "{report}");
    assert_eq!(report["tasks_started_by_phones"], report["tasks"]);
    let outcomes: u64 = report["by_outcome"]
        .as_object()
        .expect("by_outcome")
        .values()
        .map(|n| n.as_u64().unwrap_or(0))
        .sum();
    assert_eq!(outcomes, tasks, "{}", report["by_outcome"]);
    assert_eq!(report["host_tasks"], report["host_titles"], "{report}");
    assert!(report["host_titles"].as_u64().unwrap_or(0) <= tasks);
    let ok = report["by_outcome"]["ok"].as_u64().unwrap_or(0);
    let restarted = report["by_outcome"]["host_restart"].as_u64().unwrap_or(0);
    assert!(ok > tasks / 2, "{}", report["by_outcome"]);

    // Nothing lost to a disconnect: no failure, double start, lost or
    // duplicated output, or giving up.
    assert_eq!(
        report["disconnect_related"]["total"], 0,
        "{}; examples: {}",
        report["disconnect_related"], report["examples"]
    );
    assert_eq!(ok + restarted, tasks, "{}", report["by_outcome"]);
    assert!(
        report["reconnect_ms"]["all"]["n"].as_u64().unwrap_or(0) >= 3,
        "{}",
        report["reconnect_ms"]
    );
    assert!(
        output.status.success(),
        "the soak exited with {}",
        output.status
    );
}

/// What the soak found first: a call that is not repeated after a drop
/// (`permission.reply`) waited for ever on a connection gone silent (the
/// phone roamed). It must fail as interrupted within the call deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_on_a_connection_gone_silent_fails_instead_of_waiting_for_ever() {
    let mut host = TestHost::new("");
    host.start();
    let device = host.pair_device("roaming", None).await;
    let path = path::NetPath::start(device.address.parse().expect("address"))
        .await
        .expect("path");
    let via = KnownHost {
        address: path.address.clone(),
        ..device.clone()
    };
    let policy = ReconnectPolicy {
        first_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
        give_up_after: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(1),
        liveness: Duration::from_secs(1),
        find_on_lan: None,
    };
    let mut session = within(10, HostSession::open(via, "roaming", policy))
        .await
        .expect("session");
    // The phone's address changes: the connection says nothing more, ever.
    path.update(|s| s.epoch += 1);
    let started = Instant::now();
    let answer: Result<Value, SessionError> = within(
        30,
        session.call(
            "permission.reply",
            json!({"requestId": "r_nothing", "decision": "once"}),
        ),
    )
    .await;
    assert!(
        matches!(answer, Err(SessionError::Interrupted { ref method }) if method == "permission.reply"),
        "{answer:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    // The next call goes through a new connection (from the new address).
    let again: Result<Value, SessionError> = within(
        30,
        session.call(
            "permission.reply",
            json!({"requestId": "r_nothing", "decision": "once"}),
        ),
    )
    .await;
    assert!(matches!(again, Err(SessionError::Rpc(_))), "{again:?}");
    assert_eq!(session.stats().reconnects, 1);
}
