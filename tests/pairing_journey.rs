//! First-time pairing as a person meets it: a device that gives up and tries
//! again, expired and replaced codes, the window closing after wrong codes,
//! `pair`'s refusals, and device names that could disguise themselves.
//! Real host, real TLS on loopback, the real CLI where a person would use it.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use common::*;
use openwork_host::client::connect_tls;
use openwork_host::pairing::crypto;
use serde_json::{Value, json};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn fast_pairing() -> TestHost {
    let mut host = TestHost::new("[pairing]\nfailure_pause_ms = 50\n");
    host.start();
    host
}

fn owner_cli(host: &TestHost, args: &[&str]) -> std::process::Output {
    output_within(
        Command::new(bin())
            .args(args)
            .arg("--data-dir")
            .arg(&host.data),
        30,
    )
}

fn device_cli(client_dir: &std::path::Path) -> Command {
    let mut command = Command::new(bin());
    command.args(["client", "--client-dir"]).arg(client_dir);
    command
}

/// `client pair` with the code of `window` (as `pair --json` gave it), which
/// must fail: what it said on stderr.
async fn refused_pairing(host: &TestHost, client_dir: &std::path::Path, window: &Value) -> String {
    let out = output_within(
        device_cli(client_dir).args([
            "pair",
            &host.tls_address().await,
            "--code",
            window["code"].as_str().unwrap(),
        ]),
        30,
    );
    assert!(!out.status.success(), "{}", text(&out.stdout));
    text(&out.stderr)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The owner's next notification with `method`, passing over others.
async fn next_notice(owner: &mut Client, method: &str) -> Value {
    within(15, async {
        loop {
            let n = owner
                .next_notification()
                .await
                .unwrap_or_else(|e| panic!("the owner's connection ended before {method}: {e}"));
            if n["method"] == method {
                return n;
            }
        }
    })
    .await
}

async fn devices(owner: &mut Client) -> Vec<Value> {
    let list: Value = within(10, owner.call("devices.list", json!({})))
        .await
        .expect("devices.list");
    list["devices"].as_array().cloned().unwrap_or_default()
}

/// `pairing.begin` by hand with `name`; the host's answer.
async fn begin_named(
    address: &str,
    name: &str,
) -> Result<Value, openwork_host::client::ClientError> {
    let connected = within(10, connect_tls(address, None, Duration::from_secs(5)))
        .await
        .expect("tls");
    let mut conn = connected.connection;
    let start = crypto::client_start("12345678", &connected.exporter);
    within(
        10,
        conn.call(
            "pairing.begin",
            json!({"deviceName": name, "spake": B64.encode(&start.message)}),
        ),
    )
    .await
}

fn rpc_parts(err: &openwork_host::client::ClientError) -> (i32, String) {
    match err {
        openwork_host::client::ClientError::Rpc(e) => (e.code.0, e.message.clone()),
        other => panic!("not an RPC error: {other}"),
    }
}

#[tokio::test]
async fn a_device_that_gives_up_while_waiting_is_withdrawn_at_once_and_its_retry_pairs() {
    let host = fast_pairing();
    let client_dir = tempfile::tempdir().unwrap();
    let mut owner = host.connect().await;
    let window: Value = within(10, owner.call("pairing.open", json!({"ttlS": 120})))
        .await
        .unwrap();
    let code = window["code"].as_str().unwrap().to_owned();
    let address = host.tls_address().await;
    let mut first = device_cli(client_dir.path())
        .args(["pair", &address, "--code", &code, "--name", "laptop"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let requested = next_notice(&mut owner, "pairing.requested").await;
    // The person presses Ctrl-C while the owner has not answered yet.
    signal(first.id(), nix::sys::signal::Signal::SIGINT);
    wait_within(&mut first, 10);
    // The owner is told at once (the connection's end, not a timeout).
    let withdrawn = within(1, next_notice(&mut owner, "pairing.withdrawn")).await;
    assert_eq!(
        withdrawn["params"]["requestId"],
        requested["params"]["requestId"]
    );
    assert_eq!(withdrawn["params"]["windowOpen"], true);
    // Approving the stale request pairs nothing.
    let stale: Result<Value, _> = within(
        10,
        owner.call(
            "pairing.approve",
            json!({"requestId": requested["params"]["requestId"]}),
        ),
    )
    .await;
    assert!(
        stale.is_err(),
        "a withdrawn request cannot be approved: {stale:?}"
    );
    assert!(
        devices(&mut owner).await.is_empty(),
        "no device without its token"
    );
    // The retry with the same code works at once.
    let mut retry = device_cli(client_dir.path())
        .args(["pair", &address, "--code", &code, "--name", "laptop"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    answer_next_request(&mut owner, "pairing.approve").await;
    let stderr = retry.stderr.take().unwrap();
    let status = wait_within(&mut retry, 30);
    assert!(
        status.success(),
        "the retry paired: {}",
        text(&read_to_end_within(stderr, 5))
    );
    let listed = devices(&mut owner).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["name"], "laptop");
}

#[tokio::test]
async fn approving_a_device_whose_connection_just_ended_pairs_nothing() {
    let host = fast_pairing();
    let mut owner = host.connect().await;
    let window: Value = within(10, owner.call("pairing.open", json!({"ttlS": 120})))
        .await
        .unwrap();
    let code = window["code"].as_str().unwrap().to_owned();
    let address = host.tls_address().await;
    let connected = within(10, connect_tls(&address, None, Duration::from_secs(5)))
        .await
        .unwrap();
    let mut conn = connected.connection;
    let start = crypto::client_start(&code, &connected.exporter);
    let begun: Value = within(
        10,
        conn.call(
            "pairing.begin",
            json!({"deviceName": "tablet", "spake": B64.encode(&start.message)}),
        ),
    )
    .await
    .unwrap();
    let scopes: Vec<String> = serde_json::from_value(begun["scopes"].clone()).unwrap();
    let ctx = crypto::Context {
        tls_exporter: &connected.exporter,
        host_fingerprint: &connected.fingerprint,
        device_name: "tablet",
        scopes: &scopes,
        public_key: None,
    };
    let host_message = B64.decode(begun["spake"].as_str().unwrap()).unwrap();
    let keys = crypto::client_keys(start, &ctx, &host_message).unwrap();
    // Send the confirmation and walk away without reading the answer.
    let request = json!({
        "jsonrpc": "2.0", "id": 99, "method": "pairing.confirm",
        "params": {"exchangeId": begun["exchangeId"], "clientConfirm": B64.encode(keys.confirmation())}
    });
    within(10, conn.send(&request)).await.unwrap();
    let requested = next_notice(&mut owner, "pairing.requested").await;
    drop(conn);
    next_notice(&mut owner, "pairing.withdrawn").await;
    let approved: Result<Value, _> = within(
        10,
        owner.call(
            "pairing.approve",
            json!({"requestId": requested["params"]["requestId"]}),
        ),
    )
    .await;
    assert!(approved.is_err(), "{approved:?}");
    assert!(
        devices(&mut owner).await.is_empty(),
        "a device that never received its token is not listed as paired"
    );
    let status: Value = within(10, owner.call("pairing.status", json!({})))
        .await
        .unwrap();
    assert_eq!(status["open"], true, "the window stays open for a retry");
    assert_eq!(status["pending"], json!([]));
}

#[tokio::test]
async fn an_expired_code_is_told_it_expired_and_what_the_owner_must_do() {
    let host = fast_pairing();
    let client_dir = tempfile::tempdir().unwrap();
    let out = owner_cli(&host, &["pair", "--detach", "--json", "--ttl", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let window: Value = serde_json::from_slice(&out.stdout).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let said = refused_pairing(&host, client_dir.path(), &window).await;
    assert!(said.contains("expired"), "{said}");
    assert!(said.contains("openwork-host pair"), "{said}");
    assert!(!said.contains("no pairing window is open"), "{said}");
}

#[tokio::test]
async fn a_replaced_code_is_told_it_was_replaced_and_not_that_it_is_under_attack() {
    let host = fast_pairing();
    let client_dir = tempfile::tempdir().unwrap();
    let first = owner_cli(&host, &["pair", "--detach", "--json"]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let first: Value = serde_json::from_slice(&first.stdout).unwrap();
    let second = owner_cli(&host, &["pair", "--detach", "--json", "--replace"]);
    assert!(second.status.success(), "{}", text(&second.stderr));
    let said = refused_pairing(&host, client_dir.path(), &first).await;
    assert!(said.contains("replaced by a newer one"), "{said}");
    assert!(said.contains("openwork-host pair"), "{said}");
    assert!(!said.contains("someone is between"), "{said}");
}

#[tokio::test]
async fn pair_refuses_to_replace_an_open_window_unless_asked_and_refuses_nonsense_ttls() {
    let host = fast_pairing();
    let first = owner_cli(&host, &["pair", "--detach", "--json"]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let first: Value = serde_json::from_slice(&first.stdout).unwrap();
    let again = owner_cli(&host, &["pair", "--detach", "--json"]);
    assert!(
        !again.status.success(),
        "a second `pair` must not replace the window"
    );
    assert!(
        text(&again.stderr).contains("--replace"),
        "{}",
        text(&again.stderr)
    );
    let status: Value =
        serde_json::from_slice(&owner_cli(&host, &["devices", "pending", "--json"]).stdout)
            .unwrap();
    assert_eq!(status["open"], true);
    assert_eq!(
        status["expiresAt"], first["expiresAt"],
        "the first window is untouched"
    );
    for ttl in ["0", "-5", "99999", "abc", "5m"] {
        let out = owner_cli(&host, &["pair", "--detach", "--replace", "--ttl", ttl]);
        assert!(!out.status.success(), "--ttl {ttl} was accepted");
        let said = text(&out.stderr);
        assert!(
            said.contains("--ttl") || said.contains(ttl),
            "--ttl {ttl}: {said}"
        );
    }
    // The host refuses them too, for clients other than the CLI.
    let mut owner = host.connect().await;
    for ttl in [0u64, 3601, u64::MAX] {
        let err = within(
            10,
            owner.call::<_, Value>("pairing.open", json!({"ttlS": ttl, "replace": true})),
        )
        .await
        .unwrap_err();
        let (code, message) = rpc_parts(&err);
        assert_eq!(code, -32602, "ttlS {ttl}: {message}");
        assert!(message.contains("1 to 3600"), "{message}");
    }
    let replaced = owner_cli(&host, &["pair", "--detach", "--json", "--replace"]);
    assert!(replaced.status.success(), "{}", text(&replaced.stderr));
}

#[tokio::test]
async fn after_the_fifth_wrong_code_the_device_is_told_the_window_closed_and_the_owner_why() {
    let host = fast_pairing();
    let client_dir = tempfile::tempdir().unwrap();
    // The owner runs `pair` (not on a terminal: it prints, it does not ask).
    let mut owner = Command::new(bin())
        .args(["pair", "--no-prompt", "--data-dir"])
        .arg(&host.data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = owner.stdout.take().unwrap();
    let address = host.tls_address().await;
    wait_until(20, "the window to open", || {
        let out = owner_cli(&host, &["devices", "pending", "--json"]);
        serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|s| s["open"] == true)
    });
    let mut last = String::new();
    for attempt in 1..=5 {
        let out = output_within(
            device_cli(client_dir.path()).args(["pair", &address, "--code", "00000000"]),
            30,
        );
        assert!(!out.status.success());
        last = text(&out.stderr);
        if attempt < 5 {
            assert!(
                last.contains(&format!("{} attempts left", 5 - attempt)),
                "attempt {attempt}: {last}"
            );
        }
        std::thread::sleep(Duration::from_millis(120));
    }
    assert!(last.contains("window is closed"), "{last}");
    assert!(last.contains("openwork-host pair"), "{last}");
    let status = wait_within(&mut owner, 20);
    assert!(!status.success());
    let _ = read_to_end_within(stdout, 5);
    let screen = text(&read_to_end_within(owner.stderr.take().unwrap(), 5));
    assert!(screen.contains("too many wrong codes"), "{screen}");
    assert!(screen.contains("openwork-host pair` again"), "{screen}");
}

#[tokio::test]
async fn device_names_that_could_disguise_themselves_are_refused_with_a_reason() {
    let host = fast_pairing();
    let mut owner = host.connect().await;
    let _: Value = within(10, owner.call("pairing.open", json!({"ttlS": 120})))
        .await
        .unwrap();
    let address = host.tls_address().await;
    for (name, shown) in [
        ("phone\u{202E}gpj.exe", "U+202E"),
        ("phone\u{2067}x", "U+2067"),
        ("ph\u{200B}one", "U+200B"),
        ("phone\u{2028}Approve: yes", "U+2028"),
        ("phone\u{FEFF}", "U+FEFF"),
        ("phone\u{1b}[2J", "U+001B"),
    ] {
        let err = begin_named(&address, name).await.unwrap_err();
        let (code, message) = rpc_parts(&err);
        assert_eq!(code, -32602, "{name:?}: {message}");
        assert!(message.contains(shown), "{name:?}: {message}");
    }
    let long = "n".repeat(65);
    let (code, message) = rpc_parts(&begin_named(&address, &long).await.unwrap_err());
    assert_eq!(code, -32602);
    assert!(message.contains("at most 64"), "{message}");
    // Ordinary names in any script pass (and use up the window's one exchange).
    begin_named(&address, "Anna's phone — Ωμέγα 电话 📱")
        .await
        .expect("a plain name is accepted");
}
