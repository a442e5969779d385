//! The health panel and local metrics as clients read them.

mod common;

use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn metrics_count_connections_and_task_outcomes_and_survive_a_restart() {
    let mut host = TestHost::started();
    let mut client = host.connect().await;
    // The harness's readiness probe is a connection too; wait until the host
    // has seen it end, so that this one is the only one left.
    let before: Value = within(10, async {
        loop {
            let m: Value = client.call("metrics.get", json!({})).await.unwrap();
            if m["connections"]["active"] == 1 {
                return m;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    for command in ["true", "false", "exit 2"] {
        let task = run(&mut client, json!({"command": command})).await;
        follow(&mut client, &task, 20).await;
    }
    for _ in 0..3 {
        let mut brief = host.connect().await;
        let _: Value = within(10, brief.call("$/ping", json!({}))).await.unwrap();
    }
    let after = within(10, async {
        loop {
            let m: Value = client.call("metrics.get", json!({})).await.unwrap();
            // Every brief connection has ended, as the host sees it.
            let ended = m["connections"]["disconnects"].as_u64().unwrap()
                >= before["connections"]["disconnects"].as_u64().unwrap() + 3;
            if ended && m["connections"]["active"] == 1 {
                return m;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(after["tasks"]["succeeded"], 1);
    assert_eq!(after["tasks"]["failed"], 2);
    // The harness's readiness probe may be counted on either side of `before`.
    let accepted = after["connections"]["accepted"].as_u64().unwrap();
    let disconnects = after["connections"]["disconnects"].as_u64().unwrap();
    assert!(accepted >= before["connections"]["accepted"].as_u64().unwrap() + 3);
    assert_eq!(after["connections"]["active"], 1);
    assert_eq!(
        accepted - disconnects,
        1,
        "every connection but this one has ended: {after}"
    );

    let health: Value = within(10, client.call("health.get", json!({})))
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["tasks"]["failed"], 2);
    assert_eq!(health["dataDir"], host.data.display().to_string());

    drop(client);
    host.terminate();
    host.start();
    let mut client = host.connect().await;
    let restarted: Value = within(10, client.call("metrics.get", json!({})))
        .await
        .unwrap();
    assert!(
        restarted["connections"]["accepted"].as_u64() > after["connections"]["accepted"].as_u64(),
        "connection counts are kept across restarts: {restarted}"
    );
    assert_eq!(restarted["tasks"]["failed"], 2);
}

fn status_json(host: &TestHost) -> (Option<i32>, Value) {
    let out = output_within(
        std::process::Command::new(bin())
            .args(["status", "--json", "--data-dir"])
            .arg(&host.data),
        30,
    );
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.code(), report)
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap_or_else(|| panic!("no checks in {report}"))
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no `{name}` check in {report}"))
}

#[tokio::test]
async fn health_get_shows_every_check_to_readers_and_only_the_basics_to_strangers() {
    let host = TestHost::started();
    let mut client = host.connect().await;
    let task = run(&mut client, json!({"command": "exit 3"})).await;
    follow(&mut client, &task, 20).await;
    let health: Value = within(10, client.call("health.get", json!({})))
        .await
        .unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    let names: Vec<&str> = health["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "store",
            "disk",
            "listeners",
            "mdns",
            "runtime.builtin",
            "runtime.opencode",
            "recent_failures"
        ]
    );
    for check in health["checks"].as_array().unwrap() {
        assert_eq!(check["ok"], true, "{check}");
        assert!(check.get("action").is_none(), "{check}");
    }
    assert!(
        check(&health, "store")["message"]
            .as_str()
            .unwrap()
            .contains("writable")
    );
    assert_eq!(health["lastTask"]["taskId"], task.as_str());
    assert_eq!(health["lastTask"]["exitCode"], 3);
    assert_eq!(health["pairing"]["open"], false);
    assert_eq!(health["runtimes"][0]["name"], "builtin");
    let transports: Vec<&str> = health["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["transport"].as_str().unwrap())
        .collect();
    assert_eq!(transports, ["tls", "unix"]);

    let _: Value = within(10, client.call("pairing.open", json!({"ttlS": 60})))
        .await
        .unwrap();
    let health: Value = within(10, client.call("health.get", json!({})))
        .await
        .unwrap();
    assert_eq!(health["pairing"]["open"], true);
    assert!(health["pairing"]["expiresAt"].is_string());

    // Someone on the network who has not paired sees that the host is up, and nothing more.
    let connected = within(
        10,
        openwork_host::client::connect_tls(
            &host.tls_address().await,
            None,
            std::time::Duration::from_secs(5),
        ),
    )
    .await
    .unwrap();
    let mut stranger = connected.connection;
    let seen: Value = within(10, stranger.call("health.get", json!({})))
        .await
        .unwrap();
    assert_eq!(seen["status"], "ok");
    assert!(seen["hostId"].is_string());
    for hidden in [
        "checks",
        "listeners",
        "runtimes",
        "tasks",
        "lastTask",
        "pairing",
        "dataDir",
    ] {
        assert!(
            seen.get(hidden).is_none(),
            "{hidden} shown to a stranger: {seen}"
        );
    }
}

#[tokio::test]
async fn metrics_report_failures_success_rates_and_total_uptime() {
    let mut host = TestHost::new("[network]\nhandshake_timeout_ms = 500\n");
    host.start();
    let mut client = host.connect().await;
    for command in ["true", "true", "true", "false", "kill -TERM $$"] {
        let task = run(&mut client, json!({"command": command})).await;
        follow(&mut client, &task, 20).await;
    }
    // A failed TLS handshake and a failed authentication.
    let address = host.tls_address().await;
    let mut junk = tokio::net::TcpStream::connect(&address).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    junk.write_all(&[0x16, 3, 1, 0, 5, 1, 2, 3, 4, 5])
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = within(10, junk.read_to_end(&mut sink)).await;
    let connected = within(
        10,
        openwork_host::client::connect_tls(&address, None, std::time::Duration::from_secs(5)),
    )
    .await
    .unwrap();
    let mut stranger = connected.connection;
    let refused = within(
        10,
        stranger.call::<_, Value>(
            "initialize",
            json!({"auth": {"deviceId": "d_nobody", "token": "wrong"}}),
        ),
    )
    .await;
    assert!(refused.is_err());

    let m = within(10, async {
        loop {
            let m: Value = client.call("metrics.get", json!({})).await.unwrap();
            if m["connections"]["handshakeFailures"].as_u64() >= Some(1) {
                return m;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(m["telemetry"], true);
    assert!(
        m["connections"]["authFailures"].as_u64().unwrap() >= 1,
        "{m}"
    );
    for window in ["last24h", "last7d"] {
        assert_eq!(m[window]["succeeded"], 3, "{m}");
        assert_eq!(m[window]["failed"], 2, "{m}");
        assert_eq!(m[window]["successRate"], 0.6, "{m}");
    }
    let first_run = m["totalUptimeS"].as_u64().unwrap();

    drop(client);
    drop(stranger);
    host.terminate();
    host.start();
    let mut client = host.connect().await;
    let m: Value = within(10, client.call("metrics.get", json!({})))
        .await
        .unwrap();
    assert!(
        m["totalUptimeS"].as_u64().unwrap() >= first_run,
        "total uptime carries over: {m}"
    );
    assert!(m["uptimeS"].as_u64().unwrap() <= m["totalUptimeS"].as_u64().unwrap() + 1);
    assert_eq!(m["last24h"]["succeeded"], 3);
}

#[tokio::test]
async fn telemetry_off_records_no_counters_and_keeps_the_task_history() {
    let mut host = TestHost::new("[metrics]\ntelemetry = false\n");
    host.start();
    let mut client = host.connect().await;
    let task = run(&mut client, json!({"command": "true"})).await;
    follow(&mut client, &task, 20).await;
    for _ in 0..3 {
        let mut brief = host.connect().await;
        let _: Value = within(10, brief.call("$/ping", json!({}))).await.unwrap();
    }
    drop(client);
    host.terminate();
    host.start();
    let mut client = host.connect().await;
    // `start` probes the socket with a connection of its own: wait (bounded)
    // until the host has seen it close, so only this client is live.
    let mut m = Value::Null;
    for _ in 0..100 {
        m = within(10, client.call("metrics.get", json!({})))
            .await
            .unwrap();
        if m["connections"]["active"] == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(m["telemetry"], false);
    assert_eq!(m["connections"]["accepted"], 0, "{m}");
    assert_eq!(m["connections"]["disconnects"], 0, "{m}");
    assert_eq!(m["totalUptimeS"], 0, "{m}");
    assert_eq!(m["tasks"]["succeeded"], 1, "the history is not telemetry");
    assert_eq!(m["connections"]["active"], 1, "the live count is kept");
    for file in ["host.db", "host.db-wal"] {
        let bytes = std::fs::read(host.data.join(file)).unwrap_or_default();
        assert!(
            !bytes
                .windows(b"connections.accepted".len())
                .any(|w| w == b"connections.accepted"),
            "no counter was ever written ({file})"
        );
    }
}

#[test]
fn status_of_a_stopped_host_exits_3_and_says_how_to_start_it() {
    let mut host = TestHost::started();
    host.terminate();
    let out = output_within(
        std::process::Command::new(bin())
            .args(["status", "--data-dir"])
            .arg(&host.data),
        30,
    );
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("not running"), "{text}");
    let start = format!("openwork-host serve --data-dir {}", host.data.display());
    assert!(text.contains(&start), "{text}");
    assert!(
        !text.contains('\x1b'),
        "no colour when not on a terminal: {text:?}"
    );
    let (code, report) = status_json(&host);
    assert_eq!(code, Some(3));
    assert_eq!(report["status"], "stopped");
    assert!(
        report["action"].as_str().unwrap().contains(&start),
        "{report}"
    );
}

#[test]
fn status_of_a_healthy_host_prints_the_panel_in_sections_and_exits_0() {
    let host = TestHost::started();
    let out = output_within(
        std::process::Command::new(bin())
            .args(["status", "--data-dir"])
            .arg(&host.data),
        30,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for section in [
        "Host",
        "Listening",
        "Runtimes",
        "Pairing",
        "Tasks",
        "Checks",
    ] {
        assert!(
            text.lines().any(|l| l == section),
            "no {section} section: {text}"
        );
    }
    assert!(text.contains(": ok"), "{text}");
    assert!(text.contains("✓ disk"), "{text}");
}

#[test]
fn doctor_with_the_host_down_checks_what_it_can_and_shows_each_fix() {
    let mut host = TestHost::started();
    host.terminate();
    std::fs::write(
        host.data.join("config.toml"),
        "[tasks]\nmax_concurent = 3\n",
    )
    .unwrap();
    let out = output_within(
        std::process::Command::new(bin())
            .args(["doctor", "--data-dir"])
            .arg(&host.data),
        30,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("✗ daemon"), "{text}");
    assert!(
        text.contains(&format!(
            "openwork-host serve --data-dir {}",
            host.data.display()
        )),
        "{text}"
    );
    assert!(text.contains("✗ config"), "{text}");
    assert!(text.contains("max_concurent"), "{text}");
    assert!(
        text.contains("passes a quick check"),
        "the store is checked offline: {text}"
    );
    assert!(text.contains("✓ disk"), "{text}");
    assert!(text.contains("✓ data_dir"), "{text}");
    assert_eq!(text.matches("fix:").count(), 2, "{text}");

    let out = output_within(
        std::process::Command::new(bin())
            .args(["doctor", "--json", "--data-dir"])
            .arg(&host.data),
        30,
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "error");
    assert_eq!(check(&report, "daemon")["ok"], false);
}

#[test]
fn a_missing_runtime_degrades_the_host_with_its_fix() {
    let mut host =
        TestHost::new("[opencode]\nenabled = \"on\"\nbinary = \"/nonexistent/opencode\"\n");
    host.start();
    let (code, report) = status_json(&host);
    assert_eq!(report["status"], "degraded", "{report}");
    assert_eq!(code, Some(1));
    let opencode = check(&report, "runtime.opencode");
    assert_eq!(opencode["ok"], false);
    assert_eq!(opencode["severity"], "warning");
    assert!(
        opencode["message"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/opencode"),
        "{opencode}"
    );
    assert!(
        opencode["action"]
            .as_str()
            .unwrap()
            .contains("[opencode] binary"),
        "{opencode}"
    );
    assert_eq!(check(&report, "runtime.builtin")["ok"], true);
    let out = output_within(
        std::process::Command::new(bin())
            .args(["doctor", "--data-dir"])
            .arg(&host.data),
        30,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(text.contains("! runtime.opencode"), "{text}");
    assert!(text.contains("fix: [opencode] binary"), "{text}");
}

#[test]
fn a_free_space_threshold_above_what_is_free_turns_the_disk_check_red() {
    let mut host = TestHost::new("[health]\nmin_free_mb = 1000000000000\n");
    host.start();
    let (code, report) = status_json(&host);
    assert_eq!(report["status"], "error", "{report}");
    assert_eq!(code, Some(2));
    let disk = check(&report, "disk");
    assert_eq!(disk["ok"], false);
    assert!(
        disk["message"].as_str().unwrap().contains("below the"),
        "{disk}"
    );
    assert!(
        disk["action"].as_str().unwrap().contains("min_free_mb"),
        "{disk}"
    );
}

/// Runs the host with its data dir on an 8 MiB tmpfs in a mount namespace
/// of its own; commands reach it through `nsenter`.
#[test]
fn a_full_disk_turns_the_disk_check_red_with_its_fix_and_green_again_when_freed() {
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root: this test must run there"
        );
        eprintln!("skipped: mounting a small file system needs root");
        return;
    }
    let host = TestHost::new("[health]\nmin_free_mb = 1\n");
    let small = host.dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=8m,mode=0700 tmpfs {small} && cp {config} {small}/config.toml && \
         exec {bin} serve --no-mdns --listen 127.0.0.1:0 --log warn --data-dir {small}",
        small = small.display(),
        config = host.data.join("config.toml").display(),
        bin = bin()
    );
    let child = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("unshare");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let pid = child.id().to_string();
    let inside = |args: &[&str]| {
        output_within(
            std::process::Command::new("nsenter")
                .args(["--target", &pid, "--mount", "--"])
                .args(args),
            60,
        )
    };
    let status = |inside: &dyn Fn(&[&str]) -> std::process::Output| {
        let out = inside(&[
            bin(),
            "status",
            "--json",
            "--data-dir",
            &small.display().to_string(),
        ]);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code(), report)
    };
    let mut child = Kill(child);
    wait_until(20, "the host on the small disk", || {
        if let Ok(Some(exit)) = child.0.try_wait() {
            panic!("the host on the small disk exited: {exit}");
        }
        status(&inside).0 == Some(0)
    });

    // Fill it up: dd stops when the file system is full.
    let filler = small.join("filler").display().to_string();
    inside(&["dd", "if=/dev/zero", &format!("of={filler}"), "bs=64k"]);
    let (code, report) = status(&inside);
    assert_eq!(code, Some(2), "{report}");
    assert_eq!(report["status"], "error");
    let disk = check(&report, "disk");
    assert_eq!(disk["ok"], false, "{disk}");
    assert!(
        disk["message"]
            .as_str()
            .unwrap()
            .contains("below the 1 MiB minimum"),
        "{disk}"
    );
    assert!(
        disk["action"].as_str().unwrap().contains("free space"),
        "{disk}"
    );
    let doctor = inside(&[bin(), "doctor", "--data-dir", &small.display().to_string()]);
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        text.contains("✗ disk") && text.contains("fix: free space"),
        "{text}"
    );

    inside(&["rm", &filler]);
    wait_until(20, "the checks to pass again", || {
        status(&inside).0 == Some(0)
    });
    drop(child);
}

/// Every inet socket a process holds: (file, local port, remote port, state), from /proc.
fn inet_sockets(pid: u32) -> Vec<(String, u16, u16, String)> {
    let mut inodes = std::collections::HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(target) = std::fs::read_link(fd.path()) {
            let target = target.display().to_string();
            if let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
            {
                inodes.insert(inode.to_owned());
            }
        }
    }
    let port = |field: &str| {
        field
            .rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
            .unwrap_or(0)
    };
    let mut found = Vec::new();
    for file in ["tcp", "tcp6", "udp", "udp6"] {
        let Ok(table) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) else {
            continue;
        };
        for line in table.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 9 && inodes.contains(fields[9]) {
                found.push((
                    file.to_owned(),
                    port(fields[1]),
                    port(fields[2]),
                    fields[3].to_owned(),
                ));
            }
        }
    }
    found
}

/// Samples the host's sockets (every few ms, from /proc) while it serves
/// local and TLS clients and runs tasks: every inet socket it holds is its
/// TLS listener or a connection accepted on it; it has no UDP socket at all.
/// (Sampling can miss a connection shorter than the interval; the host has
/// no code path that would open one with mDNS and OpenCode off.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_opens_no_outbound_connection_while_it_serves_and_runs_tasks() {
    let mut host = TestHost::new("[pairing]\nfailure_pause_ms = 50\n");
    host.start();
    let pid = host.pid();
    let tls_port: u16 = host
        .tls_address()
        .await
        .rsplit_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = std::thread::spawn({
        let stop = std::sync::Arc::clone(&stop);
        move || {
            let mut seen = Vec::new();
            let mut samples = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seen.extend(inet_sockets(pid));
                samples += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            (samples, seen)
        }
    });
    let device = host.pair_device("phone", None).await;
    let mut owner = host.connect().await;
    for i in 0..5 {
        let mut session = device_session(&device).await;
        let task = {
            let r: Value = within(
                10,
                session.call(
                    "task.run",
                    json!({"command": format!("echo {i}; sleep 0.05")}),
                ),
            )
            .await
            .unwrap();
            r["taskId"].as_str().unwrap().to_owned()
        };
        follow(&mut session, &task, 20).await;
        let _: Value = within(10, session.call("health.get", json!({})))
            .await
            .unwrap();
        let _: Value = within(10, owner.call("metrics.get", json!({})))
            .await
            .unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (samples, seen) = sampler.join().unwrap();
    assert!(samples > 10, "{samples} samples");
    let accepted = seen
        .iter()
        .filter(|(_, local, remote, _)| *local == tls_port && *remote != 0)
        .count();
    assert!(
        accepted > 0,
        "the sampler sees the host's accepted connections: {seen:?}"
    );
    for (file, local, remote, state) in &seen {
        assert!(
            file.starts_with("tcp"),
            "a UDP socket: {file} {local} {remote}"
        );
        // 0A is LISTEN; anything else must be a connection accepted on the TLS port.
        assert!(
            *local == tls_port,
            "an outbound connection: {file} local port {local} to port {remote} (state {state})"
        );
    }
}
