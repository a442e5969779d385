//! Network hardening: the connection budgets and deadlines, the reply
//! budget, stalled frames, the log against forging and flooding, and what
//! counts as a failed authentication.

mod common;

use std::time::Duration;

use common::*;
use openwork_host::client::tls::connect_tls_stream;
use openwork_host::client::{TlsConnection, connect_tls};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: u64 = 1024 * 1024;

/// Reads until the host closes the stream (or it fails); what was read is dropped.
async fn closed<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}

/// A TLS connection that has done nothing but the handshake.
async fn stranger(address: &str) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    within(
        10,
        connect_tls_stream(address, None, Duration::from_secs(5)),
    )
    .await
    .expect("handshake")
    .stream
}

/// A device connection, authenticated by hand (for the frames the library would not send).
async fn raw_device(device: &openwork_host::client::KnownHost) -> TlsConnection {
    let mut conn = within(
        10,
        connect_tls(
            &device.address,
            Some(&device.fingerprint),
            Duration::from_secs(5),
        ),
    )
    .await
    .expect("tls")
    .connection;
    let _: Value = within(
        10,
        conn.call(
            "initialize",
            json!({"auth": {"deviceId": device.device_id, "token": device.token}}),
        ),
    )
    .await
    .expect("initialize");
    conn
}

#[tokio::test]
async fn a_paired_device_connects_and_runs_a_task_while_the_unauthenticated_budget_is_full() {
    let mut host = TestHost::new(
        "[network]\nmax_connections = 12\nmax_unauthenticated = 6\nmax_unauthenticated_per_address = 6\n",
    );
    host.start();
    let device = host.pair_device("phone", None).await;

    // Strangers fill the unauthenticated budget twice over (and on their
    // own the whole total) with connections that finish TLS and say nothing.
    let mut strangers = Vec::new();
    for _ in 0..12 {
        strangers.push(stranger(&device.address).await);
    }
    let mut session = device_session(&device).await;
    // Once authenticated, more strangers cannot push the device out.
    for _ in 0..12 {
        strangers.push(stranger(&device.address).await);
    }
    let started: Value = within(
        10,
        session.call("task.run", json!({"command": "echo still here"})),
    )
    .await
    .expect("task.run");
    let task = started["taskId"].as_str().unwrap().to_owned();
    let followed = follow(&mut session, &task, 20).await;
    assert_eq!(String::from_utf8_lossy(&followed.output()), "still here\n");
    // The oldest strangers made room: the host closed them.
    within(10, closed(&mut strangers[0])).await;
}

#[tokio::test]
async fn silent_trickling_and_half_sent_connections_are_closed_by_their_deadlines() {
    let mut host = TestHost::new(
        "[network]\ninitialize_timeout_ms = 1000\nunauthenticated_idle_ms = 1000\nframe_timeout_ms = 1000\nkeepalive_timeout_s = 1\n",
    );
    host.start();
    let device = host.pair_device("phone", None).await;
    let address = device.address.clone();

    // Silent after the handshake.
    let mut silent = stranger(&address).await;
    // An `initialize` sent a byte at a time, never finished in time.
    let mut trickle = stranger(&address).await;
    let trickling = tokio::spawn(async move {
        let frame = br#"Content-Length: 80

{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#;
        for byte in frame.iter().take(60) {
            if trickle.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        trickle
    });
    // Initialized without a credential, then a frame that stops halfway.
    let mut half = within(10, connect_tls(&address, None, Duration::from_secs(5)))
        .await
        .unwrap()
        .connection;
    let _: Value = within(10, half.call("initialize", json!({})))
        .await
        .unwrap();
    half.send_raw(b"Content-Length: 100\r\n\r\n{\"jsonrpc\":\"2.0\",")
        .await
        .unwrap();
    // Initialized without a credential, then idle.
    let mut idle = within(10, connect_tls(&address, None, Duration::from_secs(5)))
        .await
        .unwrap()
        .connection;
    let _: Value = within(10, idle.call("initialize", json!({})))
        .await
        .unwrap();
    // A paired device that goes quiet past the keep-alive period.
    let mut quiet = device_session(&device).await;

    within(15, closed(&mut silent)).await;
    let mut trickle = within(20, trickling).await.unwrap();
    within(15, closed(&mut trickle)).await;
    assert!(
        within(15, half.next_message()).await.is_err(),
        "a half-sent frame is dropped"
    );
    assert!(within(15, idle.next_message()).await.is_err());
    assert!(within(15, quiet.next_message()).await.is_err());

    // A device that keeps talking stays.
    let mut chatty = device_session(&device).await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let pong: Value = within(10, chatty.call("$/ping", json!({})))
            .await
            .expect("a live device stays connected");
        assert_eq!(pong, json!({}));
    }
}

/// Runs a task that prints 1 MiB of newlines (each escaped in JSON, so
/// `task.logs` of it all is about 2 MB) and waits for it to end.
async fn newlines_task(host: &TestHost) -> String {
    let mut owner = host.connect().await;
    let task = run(
        &mut owner,
        json!({"command": "head -c 1048576 /dev/zero | tr '\\0' '\\n'"}),
    )
    .await;
    let followed = follow(&mut owner, &task, 60).await;
    assert_eq!(followed.last().status.as_str(), "succeeded");
    task
}

/// CPU time a process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("process stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat")
        .1
        .split_whitespace()
        .collect();
    // utime and stime, fields 14 and 15 (the 12th and 13th after the name).
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// The most the host's RSS grows over `baseline` (KiB) until it has stopped
/// working (no CPU used for 2 s; at most 120 s), in MiB.
async fn peak_growth_mib(pid: u32, baseline: u64) -> u64 {
    let mut peak = 0;
    let mut ticks = Vec::new();
    for _ in 0..1200 {
        peak = peak.max(rss_kib(pid).saturating_sub(baseline));
        ticks.push(cpu_ticks(pid));
        if ticks.len() > 20 && ticks[ticks.len() - 1] - ticks[ticks.len() - 21] < 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    peak / 1024
}

/// A reply frame's id and whether it is a result, read from its start
/// (parsing 8 MB of JSON per reply would make the test slow).
fn reply_head(frame: &[u8]) -> (u64, bool) {
    let head = String::from_utf8_lossy(&frame[..frame.len().min(80)]);
    let rest = head
        .strip_prefix(r#"{"jsonrpc":"2.0","id":"#)
        .unwrap_or_else(|| panic!("not a reply: {head}"));
    let end = rest.find(',').expect("an id");
    (
        rest[..end].parse().expect("a numeric id"),
        rest[end..].starts_with(r#","result":"#),
    )
}

#[tokio::test]
async fn a_client_that_never_reads_cannot_make_the_host_hold_its_replies() {
    let host = TestHost::started();
    let task = newlines_task(&host).await;
    let device = host
        .pair_device("reader", Some(vec![openwork_host::auth::Scope::TasksRead]))
        .await;
    let logs = |id: u64| {
        json!({"jsonrpc": "2.0", "id": id, "method": "task.logs",
               "params": {"taskId": task, "limit": 1000}})
    };

    // One batch of 200 `task.logs`, never read (until later).
    let mut batcher = raw_device(&device).await;
    let baseline = rss_kib(host.pid());
    let batch: Vec<Value> = (1..=200).map(logs).collect();
    batcher.send(&Value::Array(batch)).await.unwrap();
    let growth = peak_growth_mib(host.pid(), baseline).await;
    eprintln!("one unread batch of 200 task.logs: the host grew by at most {growth} MiB");
    assert!(growth < 64, "the host grew by {growth} MiB for one batch");

    // 128 pipelined calls, never read (until later).
    let mut piper = raw_device(&device).await;
    let baseline = rss_kib(host.pid());
    for id in 1..=128 {
        piper.send(&logs(id)).await.unwrap();
    }
    let growth = peak_growth_mib(host.pid(), baseline).await;
    eprintln!("128 unread pipelined task.logs: the host grew by at most {growth} MiB");
    assert!(
        growth < 64,
        "the host grew by {growth} MiB for 128 pipelined calls"
    );

    // Read now: every call gets its answer; the pipelined ones all succeed.
    let mut answered = std::collections::BTreeSet::new();
    within(120, async {
        while answered.len() < 128 {
            let frame = piper.read_frame().await.expect("a reply");
            let (id, result) = reply_head(&frame);
            assert!(result, "{}", String::from_utf8_lossy(&frame));
            answered.insert(id);
        }
    })
    .await;
    assert_eq!(answered.len(), 128);
    let replies = within(60, batcher.next_message()).await.expect("the batch");
    let replies = replies.as_array().expect("a batch reply");
    assert_eq!(replies.len(), 200, "every call of the batch is answered");
    let ok = replies.iter().filter(|r| r["result"].is_object()).count();
    assert!(ok >= 1, "the first calls run");
    for refused in replies.iter().filter(|r| r["error"].is_object()) {
        let message = refused["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("limits.max_reply_bytes_in_flight"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn stalled_large_frames_are_dropped_and_their_memory_returned() {
    let mut host = TestHost::new("[network]\nframe_timeout_ms = 2000\n");
    host.start();
    let device = host.pair_device("phone", None).await;
    let mut conns = Vec::new();
    for _ in 0..20 {
        conns.push(raw_device(&device).await);
    }
    let baseline = rss_kib(host.pid());
    // A 16 MiB frame, all but its last byte, on each connection.
    let length = 16 * MIB as usize;
    let body = vec![b' '; length - 1];
    for conn in &mut conns {
        conn.send_raw(format!("Content-Length: {length}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        within(30, conn.send_raw(&body)).await.unwrap();
    }
    for conn in &mut conns {
        assert!(within(20, conn.next_message()).await.is_err());
    }
    // Bounded: the connections are gone; their bodies with them.
    let mut growth = u64::MAX;
    for _ in 0..50 {
        growth = rss_kib(host.pid()).saturating_sub(baseline) / 1024;
        if growth < 64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("20 stalled 16 MiB frames: {growth} MiB still held after their connections closed");
    assert!(
        growth < 64,
        "the host still holds {growth} MiB after the connections closed"
    );
}

#[tokio::test]
async fn a_forged_device_id_does_not_make_a_log_line_and_failed_initialize_cannot_flood() {
    let mut host = TestHost::new("");
    let log = host.dir.path().join("host.log");
    host.start_logging_to(&log);
    let address = host.tls_address().await;
    let forged = "2030-01-01T00:00:00.000000Z  WARN openwork_host: FORGED";
    let device_id = format!("d_x\n{forged}\x1b[2J\x1b[31m");

    // One connection fails `initialize` again and again: it is closed after a few.
    let mut conn = within(10, connect_tls(&address, None, Duration::from_secs(5)))
        .await
        .unwrap()
        .connection;
    for id in 0..50 {
        let attempt = json!({"jsonrpc": "2.0", "id": id, "method": "initialize",
            "params": {"auth": {"deviceId": device_id, "token": "A".repeat(43)}}});
        if conn.send(&attempt).await.is_err() {
            break;
        }
    }
    let mut answers = 0;
    within(15, async {
        while conn.next_message().await.is_ok() {
            answers += 1;
        }
    })
    .await;
    assert_eq!(
        answers,
        openwork_host::session::MAX_FAILED_INITIALIZE,
        "closed after a few failures"
    );
    // Many connections, each failing as often as it may.
    for _ in 0..20 {
        let mut conn = within(10, connect_tls(&address, None, Duration::from_secs(5)))
            .await
            .unwrap()
            .connection;
        for id in 0..3 {
            let _ = within(
                10,
                conn.call::<_, Value>(
                    "initialize",
                    json!({"auth": {"deviceId": format!("d_{id}\n{forged}"), "token": "A".repeat(43)}}),
                ),
            )
            .await;
        }
    }
    let mut owner = host.connect().await;
    let _: Value = within(10, owner.call("health.get", json!({})))
        .await
        .unwrap();
    host.terminate();

    let text = std::fs::read(&log).unwrap();
    assert!(!text.contains(&0x1b), "no escape byte reaches the log");
    let text = String::from_utf8_lossy(&text);
    assert!(
        !text.lines().any(|l| l.starts_with(forged)),
        "a forged line:\n{text}"
    );
    assert!(text.contains("FORGED"), "the attempt is logged, escaped");
    let failures = text
        .lines()
        .filter(|l| l.contains("authentication failed"))
        .count();
    assert!(
        (1..=10).contains(&failures),
        "{failures} lines for 63 failures:\n{text}"
    );
    assert!(text.contains("were left out"), "{text}");
    assert!(text.len() < 32 * 1024, "{} bytes of log", text.len());
}

#[tokio::test]
async fn only_a_credential_that_fails_counts_as_a_failed_authentication() {
    let host = TestHost::started();
    let address = host.tls_address().await;
    let mut stranger = within(10, connect_tls(&address, None, Duration::from_secs(5)))
        .await
        .unwrap()
        .connection;
    for _ in 0..20 {
        let refused = within(10, stranger.call::<_, Value>("task.list", json!({}))).await;
        assert!(refused.is_err());
    }
    let mut owner = host.connect().await;
    let check = |health: &Value| {
        health["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "recent_failures")
            .unwrap()
            .clone()
    };
    let health: Value = within(10, owner.call("health.get", json!({})))
        .await
        .unwrap();
    assert_eq!(check(&health)["ok"], true, "{health}");
    let metrics: Value = within(10, owner.call("metrics.get", json!({})))
        .await
        .unwrap();
    assert_eq!(metrics["connections"]["authFailures"], 0, "{metrics}");

    // A credential that fails counts, and the check says where it came from.
    let refused = within(
        10,
        stranger.call::<_, Value>(
            "initialize",
            json!({"auth": {"deviceId": "d_unknown", "token": "A".repeat(43)}}),
        ),
    )
    .await;
    assert!(refused.is_err());
    let metrics: Value = within(10, owner.call("metrics.get", json!({})))
        .await
        .unwrap();
    assert_eq!(metrics["connections"]["authFailures"], 1, "{metrics}");
    let health: Value = within(10, owner.call("health.get", json!({})))
        .await
        .unwrap();
    let message = check(&health)["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("1 failed authentication") && message.contains("\"d_unknown\""),
        "{message}"
    );
    assert!(message.contains("127.0.0.1"), "{message}");
}
