//! Every conformance fixture, replayed over stdio (both framings) and the unix socket.

mod common;

use std::path::PathBuf;

use common::{TestHost, bin, output_within};
use openwork_host::client::KnownHosts;
use openwork_host::conformance::{Outcome, Target, load, replay, run_fixture};
use serde_json::json;

fn fixtures() -> Vec<openwork_host::conformance::Fixture> {
    let fixtures =
        load(&[PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")]).expect("fixtures load");
    assert!(
        fixtures.len() >= 10,
        "the fixtures directory holds the transcripts"
    );
    fixtures
}

async fn replay_all(target: Target, expect_skipped: usize) {
    let fixtures = fixtures();
    let (passed, failed, skipped) = replay(&target, &fixtures).await;
    assert_eq!(
        failed, 0,
        "conformance failures on {target:?} (see the report above)"
    );
    assert_eq!(skipped, expect_skipped, "fixtures skipped on {target:?}");
    assert_eq!(passed + skipped, fixtures.len());
}

fn framing_only(framing: &str) -> usize {
    fixtures().iter().filter(|f| f.framing == framing).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixtures_pass_over_stdio_with_lsp_framing() {
    let target = Target::parse("stdio", "lsp", PathBuf::from(bin())).unwrap();
    replay_all(target, framing_only("ndjson")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixtures_pass_over_stdio_with_newline_delimited_json() {
    let target = Target::parse("stdio", "ndjson", PathBuf::from(bin())).unwrap();
    replay_all(target, framing_only("lsp")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixtures_pass_over_the_unix_socket() {
    let host = TestHost::started();
    let target = Target::parse(
        &format!("unix:{}", host.socket().display()),
        "lsp",
        PathBuf::from(bin()),
    )
    .unwrap();
    replay_all(target, framing_only("ndjson")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixtures_pass_over_stdio_bridged_to_a_running_daemon() {
    let host = TestHost::started();
    let command = format!("exec:{} stdio --data-dir {}", bin(), host.data.display());
    for (framing, skipped) in [("lsp", "ndjson"), ("ndjson", "lsp")] {
        let target = Target::parse(&command, framing, PathBuf::from(bin())).unwrap();
        replay_all(target, framing_only(skipped)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixtures_pass_over_tls_as_a_paired_device() {
    let mut host = TestHost::new("[devices]\nremote_admin = true\n");
    host.start();
    let device = host
        .pair_device_with_window(
            "conformance",
            json!({"ttlS": 120, "scopes": ["tasks.run", "tasks.read", "permissions.reply", "admin"]}),
        )
        .await;
    let client_dir = tempfile::tempdir().unwrap();
    let mut hosts = KnownHosts::load(client_dir.path()).unwrap();
    hosts.add(device.clone());
    hosts.save().unwrap();
    let address = format!("tls://{}", device.address);
    let target =
        Target::parse_in(&address, "lsp", PathBuf::from(bin()), client_dir.path()).unwrap();
    assert!(matches!(target, Target::Tls(_)), "{target:?}");
    replay_all(target, framing_only("ndjson")).await;

    // The command finds the host in the client dir, and says what to do when it cannot.
    let ids = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/ids.json");
    let out = output_within(
        std::process::Command::new(bin())
            .args(["conformance", "--target", &address, "--client-dir"])
            .arg(client_dir.path())
            .arg(&ids),
        60,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("PASS ids"), "{stdout}");
    let out = output_within(
        std::process::Command::new(bin())
            .args([
                "conformance",
                "--target",
                "tls://127.0.0.1:1",
                "--client-dir",
            ])
            .arg(client_dir.path())
            .arg(&ids),
        60,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("not paired with a host at 127.0.0.1:1") && stderr.contains("client pair"),
        "{stderr}"
    );

    // A revoked credential fails every fixture at the start, with the reason.
    let mut owner = host.connect().await;
    let _: serde_json::Value = common::within(
        10,
        owner.call("devices.revoke", json!({"deviceId": device.device_id})),
    )
    .await
    .unwrap();
    let fixture = load(&[ids]).unwrap().remove(0);
    let target =
        Target::parse_in(&address, "lsp", PathBuf::from(bin()), client_dir.path()).unwrap();
    match run_fixture(&target, &fixture).await {
        Outcome::Failed { step: 0, reason } => {
            assert!(
                reason.contains("refused this device's credential"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_conformance_command_reports_per_fixture_and_fails_on_a_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("wrong.json"),
        r#"{"name": "wrong", "steps": [
            {"send": {"jsonrpc": "2.0", "id": 1, "method": "$/ping"}},
            {"expect": {"jsonrpc": "2.0", "id": 1, "result": {"pong": true}}}]}"#,
    )
    .unwrap();
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join("ids.json");
    let out = output_within(
        std::process::Command::new(bin())
            .args(["conformance", "--target", "stdio"])
            .arg(&fixtures)
            .arg(dir.path().join("wrong.json")),
        60,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "a failing fixture fails the command");
    assert!(stdout.contains("PASS ids"), "{stdout}");
    assert!(stdout.contains("FAIL wrong at step 2"), "{stdout}");
    assert!(stdout.contains("1 passed, 1 failed"), "{stdout}");
}

#[test]
fn the_conformance_command_with_no_fixtures_says_where_they_are() {
    let empty = tempfile::tempdir().unwrap();
    let out = output_within(
        std::process::Command::new(bin())
            .args(["conformance", "--target", "stdio"])
            .arg(empty.path()),
        30,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no fixtures found") && stderr.contains("fixtures/"),
        "{stderr}"
    );
}
