//! Network access: TLS, pairing (and a man in the middle), authentication,
//! scopes, revocation, pinning, and misbehaving peers. Real TLS on loopback.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use common::*;
use openwork_host::auth::Scope;
use openwork_host::client::pair::{PairError, PairRequest, pair};
use openwork_host::client::{ConnectError, connect_tls, open_session};
use openwork_host::pairing::crypto;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn fast_pairing() -> TestHost {
    let mut host =
        TestHost::new("[pairing]\nfailure_pause_ms = 50\n[network]\nhandshake_timeout_ms = 500\n");
    host.start();
    host
}

async fn open_window(owner: &mut Client, extra: Value) -> Value {
    let mut params = json!({"ttlS": 120});
    if let (Some(p), Some(e)) = (params.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    within(10, owner.call("pairing.open", params))
        .await
        .expect("pairing.open")
}

/// Runs `pairing.begin` by hand; returns the client's keys check and the exchange.
async fn begin(address: &str, code: &str, name: &str) -> (Device, Value, crypto::ClientKeys) {
    let connected = within(10, connect_tls(address, None, Duration::from_secs(5)))
        .await
        .expect("tls");
    let mut conn = connected.connection;
    let start = crypto::client_start(code, &connected.exporter);
    let begun: Value = within(
        10,
        conn.call(
            "pairing.begin",
            json!({"deviceName": name, "spake": B64.encode(&start.message)}),
        ),
    )
    .await
    .expect("pairing.begin");
    let scopes: Vec<String> = serde_json::from_value(begun["scopes"].clone()).unwrap();
    let ctx = crypto::Context {
        tls_exporter: &connected.exporter,
        host_fingerprint: &connected.fingerprint,
        device_name: name,
        scopes: &scopes,
        public_key: None,
    };
    let host_message = B64.decode(begun["spake"].as_str().unwrap()).unwrap();
    let keys = crypto::client_keys(start, &ctx, &host_message).expect("keys");
    (conn, begun, keys)
}

/// Runs `pairing.begin` on a new connection where it must be refused: the error.
async fn refused_begin(
    address: &str,
    code: &str,
    name: &str,
) -> openwork_host::client::ClientError {
    let connected = within(10, connect_tls(address, None, Duration::from_secs(5)))
        .await
        .expect("tls");
    let mut conn = connected.connection;
    let start = crypto::client_start(code, &connected.exporter);
    within(
        10,
        conn.call::<_, Value>(
            "pairing.begin",
            json!({"deviceName": name, "spake": B64.encode(&start.message)}),
        ),
    )
    .await
    .expect_err("pairing.begin must be refused")
}

async fn confirm(
    conn: &mut Device,
    begun: &Value,
    confirmation: [u8; 32],
) -> Result<Value, openwork_host::client::ClientError> {
    within(
        10,
        conn.call(
            "pairing.confirm",
            json!({"exchangeId": begun["exchangeId"], "clientConfirm": B64.encode(confirmation)}),
        ),
    )
    .await
}

/// Approves the owner's next pairing request, passing over the notices that
/// come before it (such as `pairing.failed` for earlier attempts).
async fn approve_request_after_failures(owner: &mut Client) {
    let requested = within(10, async {
        loop {
            let n = owner
                .next_notification()
                .await
                .expect("the owner's connection ended before a pairing request");
            if n["method"] == "pairing.requested" {
                return n;
            }
        }
    })
    .await;
    answer_request(owner, &requested, "pairing.approve").await;
}

fn code_of(err: &openwork_host::client::ClientError) -> i32 {
    match err {
        openwork_host::client::ClientError::Rpc(e) => e.code.0,
        other => panic!("not an RPC error: {other}"),
    }
}

#[tokio::test]
async fn a_device_pairs_over_tls_with_approval_and_runs_a_task() {
    let host = fast_pairing();
    let device = host.pair_device("phone", None).await;
    assert_eq!(
        device.scopes,
        vec![
            Scope::TasksRun,
            Scope::TasksRead,
            Scope::PermissionsReply,
            Scope::Opencode
        ]
    );
    assert_eq!(device.token.len(), 43);
    let mut session = device_session(&device).await;
    let _task = {
        let result: Value = within(
            10,
            session.call("task.run", json!({"command": "echo over tls"})),
        )
        .await
        .unwrap();
        result["taskId"].as_str().unwrap().to_owned()
    };
    let output = within(20, async {
        let mut text = String::new();
        loop {
            let m = session.next_notification().await.unwrap();
            if m["method"] == "log.chunk" {
                text.push_str(m["params"]["data"].as_str().unwrap());
            }
            if m["method"] == "task.updated" && m["params"]["status"] == "succeeded" {
                return text;
            }
        }
    })
    .await;
    assert_eq!(output, "over tls\n");
    let mut owner = host.connect().await;
    let devices: Value = within(10, owner.call("devices.list", json!({})))
        .await
        .unwrap();
    assert_eq!(devices["devices"][0]["name"], "phone");
    assert_eq!(devices["devices"][0]["connections"], 1);
    let stored = std::fs::read(host.data.join("host.db")).unwrap();
    assert!(
        !stored
            .windows(device.token.len())
            .any(|w| w == device.token.as_bytes()),
        "the token is never stored in the clear"
    );
}

#[tokio::test]
async fn initialize_returns_the_device_scopes_with_what_they_allow() {
    let host = fast_pairing();
    let device = host
        .pair_device("reader", Some(vec![Scope::TasksRead]))
        .await;
    let connected = within(
        10,
        connect_tls(
            &device.address,
            Some(&device.fingerprint),
            Duration::from_secs(5),
        ),
    )
    .await
    .unwrap();
    let mut conn = connected.connection;
    let init: Value = within(
        10,
        conn.call(
            "initialize",
            json!({"auth": {"deviceId": device.device_id, "token": device.token}}),
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        init["scopes"],
        json!([{"scope": "tasks.read", "description": Scope::TasksRead.description()}])
    );
    let methods = init["capabilities"]["methods"].as_array().unwrap();
    assert!(methods.contains(&json!("task.list")) && !methods.contains(&json!("task.run")));
}

/// A relay that terminates TLS on both legs with its own certificate and forwards everything.
async fn mitm_relay(host_address: String) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["openwork-host".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    config.alpn_protocols = vec![b"openwork/1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, host_address) = (acceptor.clone(), host_address.clone());
            tokio::spawn(async move {
                let Ok(mut client_leg) = acceptor.accept(tcp).await else {
                    return;
                };
                let verifier = openwork_host::transport::tls::PinnedCert::new(None);
                let config = openwork_host::transport::tls::client_config(verifier).unwrap();
                let tcp = tokio::net::TcpStream::connect(&host_address).await.unwrap();
                let Ok(mut host_leg) = tokio_rustls::TlsConnector::from(config)
                    .connect(openwork_host::transport::tls::server_name(), tcp)
                    .await
                else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut client_leg, &mut host_leg).await;
            });
        }
    });
    address
}

#[tokio::test]
async fn a_man_in_the_middle_who_relays_every_message_makes_pairing_fail_on_both_sides() {
    let host = fast_pairing();
    let mut owner = host.connect().await;
    let window = open_window(&mut owner, json!({})).await;
    let code = window["code"].as_str().unwrap().to_owned();
    let relay = mitm_relay(host.tls_address().await).await;

    // The device's side: the host's confirmation does not check out.
    let (mut conn, begun, keys) = begin(&relay, &code, "victim").await;
    assert!(!keys.verify_host(&B64.decode(begun["hostConfirm"].as_str().unwrap()).unwrap()));
    // The host's side: even a device that confirms anyway is refused.
    let err = confirm(&mut conn, &begun, keys.confirmation())
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), -32001, "{err}");
    let failed = within(10, owner.next_notification()).await.unwrap();
    assert_eq!(failed["method"], "pairing.failed");

    // The library's client stops as soon as the host fails to prove itself,
    // sending only random bytes to learn the other side's verdict.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let request = PairRequest {
        address: relay.clone(),
        code: code.clone(),
        device_name: "victim".into(),
        scopes: None,
        expected_fingerprint: None,
        approval_timeout: Duration::from_secs(5),
    };
    match pair(&request).await {
        Err(PairError::CodeRejected(e)) => assert_eq!(e.code.0, -32001, "{e}"),
        other => panic!("the relayed pairing must fail on the code: {other:?}"),
    }
    let abandoned = within(10, owner.next_notification()).await.unwrap();
    assert_eq!(
        abandoned["method"], "pairing.failed",
        "the exchange it left counts"
    );
    assert_eq!(abandoned["params"]["failures"], 2);

    // No credential was issued; the right connection still pairs with the same code.
    let devices: Value = within(10, owner.call("devices.list", json!({})))
        .await
        .unwrap();
    assert_eq!(devices["devices"], json!([]));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (mut conn, begun, keys) = begin(&host.tls_address().await, &code, "real").await;
    assert!(keys.verify_host(&B64.decode(begun["hostConfirm"].as_str().unwrap()).unwrap()));
    let confirming =
        tokio::spawn(async move { confirm(&mut conn, &begun, keys.confirmation()).await });
    approve_request_after_failures(&mut owner).await;
    let paired = within(10, confirming).await.unwrap().unwrap();
    assert_eq!(paired["fingerprint"], window["fingerprint"]);
}

#[tokio::test]
async fn five_wrong_codes_close_the_window() {
    let host = fast_pairing();
    let mut owner = host.connect().await;
    open_window(&mut owner, json!({})).await;
    let address = host.tls_address().await;
    for attempt in 1..=5 {
        let (mut conn, begun, keys) = begin(&address, "00000000", "guesser").await;
        let err = confirm(&mut conn, &begun, keys.confirmation())
            .await
            .unwrap_err();
        if attempt < 5 {
            assert_eq!(code_of(&err), -32001, "attempt {attempt}: {err}");
            assert!(
                err.to_string()
                    .contains(&format!("{} attempts left", 5 - attempt)),
                "{err}"
            );
        } else {
            assert_eq!(
                code_of(&err),
                -32005,
                "the fifth wrong code closes the window: {err}"
            );
        }
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    let err = refused_begin(&address, "00000000", "x").await;
    assert_eq!(code_of(&err), -32005);
    let status: Value = within(10, owner.call("pairing.status", json!({})))
        .await
        .unwrap();
    assert_eq!(status["open"], false);
    assert_eq!(status["closedReason"], "too many wrong codes");
    let failures = within(10, async {
        let mut failures = 0;
        loop {
            let n = owner.next_notification().await.unwrap();
            match n["method"].as_str() {
                Some("pairing.failed") => failures += 1,
                Some("pairing.closed") => return failures,
                _ => {}
            }
        }
    })
    .await;
    assert_eq!(failures, 5, "the owner saw every wrong code");
}

#[tokio::test]
async fn a_guess_that_is_never_confirmed_still_counts() {
    let host = fast_pairing();
    let mut owner = host.connect().await;
    open_window(&mut owner, json!({})).await;
    let address = host.tls_address().await;
    // A guesser learns from the host's confirmation whether a guess was right,
    // and walks away instead of confirming: each begin must still cost a try.
    for attempt in 1..=5u64 {
        drop(begin(&address, "11111111", "guesser").await);
        let failed = within(10, owner.next_notification()).await.unwrap();
        assert_eq!(failed["method"], "pairing.failed");
        assert_eq!(failed["params"]["failures"], attempt);
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    let err = refused_begin(&address, "11111111", "x").await;
    assert_eq!(code_of(&err), -32005, "{err}");
}

#[tokio::test]
async fn an_expired_code_is_refused() {
    let host = fast_pairing();
    let mut owner = host.connect().await;
    let window = open_window(&mut owner, json!({"ttlS": 1})).await;
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let err = refused_begin(
        &host.tls_address().await,
        window["code"].as_str().unwrap(),
        "late",
    )
    .await;
    assert_eq!(code_of(&err), -32004, "{err}");
    let closed = within(10, owner.next_notification()).await.unwrap();
    assert_eq!(closed["params"]["reason"], "expired");
}

#[tokio::test]
async fn a_replayed_confirm_is_refused_while_a_window_is_open() {
    let host = fast_pairing();
    let mut owner = host.connect().await;
    let window = open_window(&mut owner, json!({})).await;
    let code = window["code"].as_str().unwrap();
    let address = host.tls_address().await;

    // A confirmation that fails uses its exchange up: the right one sent
    // after it, on the same exchange, is refused and pairs nothing.
    let (mut conn, begun, keys) = begin(&address, code, "tablet").await;
    let mut wrong = keys.confirmation();
    wrong[0] ^= 1;
    let err = confirm(&mut conn, &begun, wrong).await.unwrap_err();
    assert_eq!(code_of(&err), -32001, "{err}");
    let err = confirm(&mut conn, &begun, keys.confirmation())
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), -32004, "the right MAC, too late: {err}");
    let status: Value = within(10, owner.call("pairing.status", json!({})))
        .await
        .unwrap();
    assert_eq!(status["open"], true, "{status}");
    assert_eq!(status["failures"], 1);
    assert_eq!(status["pending"], json!([]), "no one awaits approval");

    // A fresh exchange pairs; then, with a new window open, its confirm
    // replayed on the same or another connection is refused.
    tokio::time::sleep(Duration::from_millis(80)).await;
    let (mut conn, begun, keys) = begin(&address, code, "tablet").await;
    let confirmation = keys.confirmation();
    let begun_copy = begun.clone();
    let mut conn_task = tokio::spawn(async move {
        let first = confirm(&mut conn, &begun, confirmation).await;
        (first, conn)
    });
    approve_request_after_failures(&mut owner).await;
    let (first, mut conn) = within(10, &mut conn_task).await.unwrap();
    first.expect("the first confirm pairs");
    open_window(&mut owner, json!({})).await;
    let err = confirm(&mut conn, &begun_copy, confirmation)
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), -32004, "the same confirm again: {err}");
    let mut other = within(10, connect_tls(&address, None, Duration::from_secs(5)))
        .await
        .unwrap()
        .connection;
    let err = confirm(&mut other, &begun_copy, confirmation)
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), -32004, "on another connection: {err}");
    let status: Value = within(10, owner.call("pairing.status", json!({})))
        .await
        .unwrap();
    assert_eq!(status["open"], true);
    assert_eq!(status["pending"], json!([]), "the replays reached no one");
    let devices: Value = within(10, owner.call("devices.list", json!({})))
        .await
        .unwrap();
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn after_a_wrong_code_the_window_pauses_and_says_when_to_try_again() {
    let mut host = TestHost::new("[pairing]\nfailure_pause_ms = 60000\n");
    host.start();
    let mut owner = host.connect().await;
    let window = open_window(&mut owner, json!({})).await;
    let address = host.tls_address().await;
    let (mut conn, begun, keys) = begin(&address, "00000000", "guesser").await;
    let err = confirm(&mut conn, &begun, keys.confirmation())
        .await
        .unwrap_err();
    assert_eq!(code_of(&err), -32001, "{err}");
    // Even the right code must wait out the pause.
    let err = refused_begin(&address, window["code"].as_str().unwrap(), "owner's phone").await;
    assert_eq!(code_of(&err), -32005, "{err}");
    let openwork_host::client::ClientError::Rpc(rpc) = &err else {
        unreachable!()
    };
    let data = rpc.data.as_ref().unwrap();
    let retry = data["retryAfterMs"].as_u64().unwrap();
    assert!(retry > 0 && retry <= 60_000, "{data}");
    assert!(data["action"].is_string(), "{data}");
    assert!(rpc.message.contains("wait"), "{}", rpc.message);
}

#[tokio::test]
async fn a_second_pairing_at_the_same_time_is_told_the_host_is_busy() {
    let host = fast_pairing();
    let mut owner = host.connect().await;
    let window = open_window(&mut owner, json!({})).await;
    let code = window["code"].as_str().unwrap();
    let address = host.tls_address().await;
    let _first = begin(&address, code, "first").await;
    let err = refused_begin(&address, code, "second").await;
    assert_eq!(code_of(&err), -32005, "{err}");
    assert!(err.to_string().contains("another device"), "{err}");
}

#[tokio::test]
async fn a_denied_device_is_told_and_gets_nothing() {
    let host = fast_pairing();
    let mut owner = host.connect().await;
    let window = open_window(&mut owner, json!({})).await;
    let (mut conn, begun, keys) = begin(
        &host.tls_address().await,
        window["code"].as_str().unwrap(),
        "stranger",
    )
    .await;
    let confirming =
        tokio::spawn(async move { confirm(&mut conn, &begun, keys.confirmation()).await });
    let requested = answer_next_request(&mut owner, "pairing.deny").await;
    assert_eq!(requested["params"]["deviceName"], "stranger");
    let err = within(10, confirming).await.unwrap().unwrap_err();
    assert_eq!(code_of(&err), -32002, "{err}");
    let devices: Value = within(10, owner.call("devices.list", json!({})))
        .await
        .unwrap();
    assert_eq!(devices["devices"], json!([]));
}

#[tokio::test]
async fn unauthenticated_calls_get_unauthorized_and_a_wrong_token_does_not_authenticate() {
    let host = fast_pairing();
    let device = host.pair_device("phone", None).await;
    let connected = within(
        10,
        connect_tls(
            &device.address,
            Some(&device.fingerprint),
            Duration::from_secs(5),
        ),
    )
    .await
    .unwrap();
    let mut conn = connected.connection;
    let pong: Value = within(10, conn.call("$/ping", json!({}))).await.unwrap();
    assert_eq!(pong, json!({}), "ping is open to everyone");
    for method in [
        "task.list",
        "task.run",
        "health.get",
        "devices.list",
        "pairing.open",
    ] {
        let result = within(10, conn.call::<_, Value>(method, json!({}))).await;
        match (method, result) {
            ("health.get", Ok(health)) => assert!(
                health.get("tasks").is_none(),
                "no details before auth: {health}"
            ),
            (_, Err(err)) => assert_eq!(code_of(&err), -32001, "{method}: {err}"),
            (_, Ok(v)) => panic!("{method} answered {v}"),
        }
    }
    let err = within(
        10,
        conn.call::<_, Value>(
            "initialize",
            json!({"auth": {"deviceId": device.device_id, "token": "A".repeat(43)}}),
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(code_of(&err), -32001);
    let err = within(10, conn.call::<_, Value>("task.list", json!({})))
        .await
        .unwrap_err();
    assert_eq!(
        code_of(&err),
        -32001,
        "still unauthenticated after a failed initialize"
    );
}

#[tokio::test]
async fn a_device_without_a_scope_is_forbidden_and_told_which_scope() {
    let host = fast_pairing();
    let device = host
        .pair_device("reader", Some(vec![Scope::TasksRead]))
        .await;
    let mut session = device_session(&device).await;
    let err = within(
        10,
        session.call::<_, Value>("task.run", json!({"command": "true"})),
    )
    .await
    .unwrap_err();
    assert_eq!(code_of(&err), -32002);
    let openwork_host::client::ClientError::Rpc(rpc) = &err else {
        unreachable!()
    };
    assert_eq!(rpc.data.as_ref().unwrap()["scope"], "tasks.run");
    assert!(rpc.message.contains("tasks.run"));
    let list: Value = within(10, session.call("task.list", json!({})))
        .await
        .unwrap();
    assert!(list["tasks"].is_array());
    let err = within(10, session.call::<_, Value>("devices.list", json!({})))
        .await
        .unwrap_err();
    assert_eq!(
        code_of(&err),
        -32002,
        "devices are the owner's business: {err}"
    );
}

#[tokio::test]
async fn a_device_with_admin_manages_devices_only_when_the_config_allows_it() {
    let mut host = TestHost::new("[devices]\nremote_admin = true\n");
    host.start();
    let admin = host
        .pair_device_with_window("admin", json!({"scopes": ["admin", "tasks.read"]}))
        .await;
    let mut session = device_session(&admin).await;
    let list: Value = within(10, session.call("devices.list", json!({})))
        .await
        .unwrap();
    assert_eq!(list["devices"][0]["name"], "admin");

    let plain = TestHost::started();
    let admin = plain
        .pair_device_with_window("admin", json!({"scopes": ["admin"]}))
        .await;
    let mut session = device_session(&admin).await;
    let err = within(10, session.call::<_, Value>("devices.list", json!({})))
        .await
        .unwrap_err();
    assert_eq!(
        code_of(&err),
        -32002,
        "by default only the owner, locally: {err}"
    );
}

/// The host's count of open connections, from a local connection.
/// The owner's `devices.list` entry for `device_id`.
async fn listed_device(owner: &mut Client, device_id: &str) -> Value {
    let list: Value = within(10, owner.call("devices.list", json!({})))
        .await
        .unwrap();
    list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["deviceId"] == device_id)
        .unwrap()
        .clone()
}

async fn active_connections(owner: &mut Client) -> u64 {
    let metrics: Value = within(10, owner.call("metrics.get", json!({})))
        .await
        .unwrap();
    metrics["connections"]["active"].as_u64().unwrap()
}

#[tokio::test]
async fn a_revoked_device_is_cut_off_at_once_and_cannot_come_back() {
    let host = fast_pairing();
    let device = host.pair_device("lost-phone", None).await;
    let mut session = device_session(&device).await;
    let mut bystander = device_session(&host.pair_device("other", None).await).await;
    let mut owner = host.connect().await;
    // The device starts a task that writes without pause and stops reading:
    // the host's queue for it and the socket between them fill up.
    let started: Value = within(
        10,
        session.call(
            "task.run",
            json!({"command": "i=0; while [ $i -lt 4000 ]; do head -c 32768 /dev/zero | tr '\\0' r; i=$((i+1)); done"}),
        ),
    )
    .await
    .unwrap();
    let task = started["taskId"].as_str().unwrap().to_owned();
    within(60, async {
        loop {
            let record: Value = owner
                .call("task.get", json!({"taskId": task}))
                .await
                .unwrap();
            // 10 MiB: more than the socket buffers and the queue hold.
            if record["lastSeq"].as_u64().unwrap() >= 320 {
                assert_eq!(record["status"], "running", "{record}");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let before = active_connections(&mut owner).await;

    let revoked: Value = within(
        10,
        owner.call("devices.revoke", json!({"deviceId": device.device_id})),
    )
    .await
    .unwrap();
    assert_eq!(revoked["closedConnections"], 1);
    let record: Value = within(10, owner.call("task.get", json!({"taskId": task})))
        .await
        .unwrap();
    let last_seq_at_revoke = record["lastSeq"].as_u64().unwrap();
    assert_eq!(record["status"], "running", "the device's task goes on");

    // The host lets go of the connection without waiting for the device to
    // read what was queued for it (a graceful close would wait up to 5 s).
    within(3, async {
        while active_connections(&mut owner).await != before - 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let lost = listed_device(&mut owner, &device.device_id).await;
    assert!(lost["revokedAt"].is_string());
    assert_eq!(lost["connections"], 0);

    // What the device can still read was sent before the revoke; then the end.
    let (chunks, highest) = within(20, async {
        let (mut chunks, mut highest) = (0u64, 0u64);
        while let Ok(message) = session.next_message().await {
            if message["method"] == "log.chunk" {
                chunks += 1;
                highest = highest.max(message["params"]["seq"].as_u64().unwrap());
            }
            if message["method"] == "task.updated" {
                assert!(
                    message["params"]["status"] == "queued"
                        || message["params"]["status"] == "running",
                    "a revoked device hears nothing after the revoke: {message}"
                );
            }
        }
        (chunks, highest)
    })
    .await;
    assert!(
        highest <= last_seq_at_revoke,
        "chunk {highest} was produced after the revoke (last seq then: {last_seq_at_revoke})"
    );
    assert!(
        chunks < last_seq_at_revoke,
        "the backlog was not streamed to the revoked device ({chunks} of {last_seq_at_revoke} chunks)"
    );

    let err = within(10, open_session(&device, "again"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("revoked"), "{err}");
    let pong: Value = within(10, bystander.call("$/ping", json!({})))
        .await
        .unwrap();
    assert_eq!(pong, json!({}), "other devices are untouched");
    let _: Value = within(10, owner.call("task.cancel", json!({"taskId": task})))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_host_whose_fingerprint_changed_is_refused_as_possibly_impersonated() {
    let host = fast_pairing();
    let mut device = host.pair_device("phone", None).await;
    device.fingerprint = "00".repeat(32);
    let err = within(10, open_session(&device, "test")).await.unwrap_err();
    assert!(
        matches!(
            &err,
            openwork_host::client::SessionError::Connect(ConnectError::FingerprintMismatch { .. })
        ),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("impersonated") && message.contains("pair again"),
        "{message}"
    );

    // The CLI says the same, and exits non-zero.
    let dir = tempfile::tempdir().unwrap();
    let mut hosts = openwork_host::client::KnownHosts::load(dir.path()).unwrap();
    hosts.add(device);
    hosts.save().unwrap();
    let out = output_within(
        std::process::Command::new(bin())
            .args(["client", "--client-dir"])
            .arg(dir.path())
            .args(["run", "--", "true"]),
        30,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("impersonated"));
}

/// The host's count of failed handshakes once it reaches `at_least`, or what
/// it is after 5 s: a client hears the alert before the host counts it.
async fn handshake_failures_reaching(owner: &mut Client, at_least: u64) -> u64 {
    let mut seen = handshake_failures(owner).await;
    for _ in 0..100 {
        if seen >= at_least {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen = handshake_failures(owner).await;
    }
    seen
}

async fn handshake_failures(owner: &mut Client) -> u64 {
    let metrics: Value = within(10, owner.call("metrics.get", json!({})))
        .await
        .unwrap();
    metrics["connections"]["handshakeFailures"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn silent_and_stalled_handshakes_are_dropped_after_the_configured_timeout() {
    // fast_pairing() sets handshake_timeout_ms = 500; the default is 10 s.
    let host = fast_pairing();
    let mut owner = host.connect().await;
    let address = host.tls_address().await;
    let before = handshake_failures(&mut owner).await;
    // The start of a TLS record announcing a 200-byte ClientHello, then nothing.
    let partial_hello: &[u8] = &[0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00];
    for (peer, first_bytes) in [("silent", &[][..]), ("stalled", partial_hello)] {
        let mut tcp = tokio::net::TcpStream::connect(&address).await.unwrap();
        tcp.write_all(first_bytes).await.unwrap();
        // Closed long before the default timeout would close it.
        let mut buf = [0u8; 16];
        let read = within(5, tcp.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "{peer}: the host closes the connection: {read:?}"
        );
    }
    assert_eq!(
        handshake_failures_reaching(&mut owner, before + 2).await,
        before + 2,
        "both count as failed handshakes"
    );
}

/// A rustls client for the host's port with a TLS version and ALPN of the test's choosing.
async fn tls_handshake(
    address: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[u8],
) -> Result<(), rustls::Error> {
    let verifier = openwork_host::transport::tls::PinnedCert::new(None);
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(verifier)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let connected = within(
        10,
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(openwork_host::transport::tls::server_name(), tcp),
    )
    .await;
    match connected {
        Ok(_) => Ok(()),
        Err(e) => Err(e
            .into_inner()
            .and_then(|inner| inner.downcast::<rustls::Error>().ok())
            .map_or_else(|| rustls::Error::General("not a TLS error".into()), |e| *e)),
    }
}

#[tokio::test]
async fn only_tls_1_3_with_the_host_s_alpn_id_is_accepted() {
    let host = fast_pairing();
    let mut owner = host.connect().await;
    let address = host.tls_address().await;
    let before = handshake_failures(&mut owner).await;
    let alpn = openwork_host::transport::tls::ALPN;
    tls_handshake(&address, &[&rustls::version::TLS13], alpn)
        .await
        .expect("TLS 1.3 with our ALPN id");
    let old = tls_handshake(&address, &[&rustls::version::TLS12], alpn).await;
    assert_eq!(
        old,
        Err(rustls::Error::AlertReceived(
            rustls::AlertDescription::ProtocolVersion
        )),
        "a TLS 1.2-only client is refused"
    );
    let other = tls_handshake(&address, &[&rustls::version::TLS13], b"h2").await;
    assert_eq!(
        other,
        Err(rustls::Error::AlertReceived(
            rustls::AlertDescription::NoApplicationProtocol
        )),
        "a client for another protocol is refused"
    );
    assert_eq!(
        handshake_failures_reaching(&mut owner, before + 2).await,
        before + 2
    );
}

#[tokio::test]
async fn plain_text_on_the_tls_port_gets_a_hint_and_garbage_disturbs_no_one() {
    let host = fast_pairing();
    let device = host.pair_device("phone", None).await;
    let mut session = device_session(&device).await;
    let address = host.tls_address().await;

    let mut plain = tokio::net::TcpStream::connect(&address).await.unwrap();
    plain
        .write_all(b"Content-Length: 2\r\n\r\n{}")
        .await
        .unwrap();
    let mut reply = Vec::new();
    within(10, plain.read_to_end(&mut reply)).await.unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.contains("this port speaks TLS"), "{reply}");

    for garbage in [
        &[0x16u8, 0x03, 0x01, 0xff, 0xff, 1, 2, 3][..],
        &[0u8; 4096][..],
        b"\x16\x16\x16\x16",
    ] {
        let mut junk = tokio::net::TcpStream::connect(&address).await.unwrap();
        let _ = junk.write_all(garbage).await;
        let mut sink = Vec::new();
        let _ = within(10, junk.read_to_end(&mut sink)).await;
        let pong: Value = within(10, session.call("$/ping", json!({}))).await.unwrap();
        assert_eq!(pong, json!({}));
    }
}

#[tokio::test]
async fn the_pair_and_client_commands_pair_a_device_end_to_end() {
    let host = fast_pairing();
    let client_dir = tempfile::tempdir().unwrap();
    let out = output_within(
        std::process::Command::new(bin())
            .args(["pair", "--detach", "--json", "--data-dir"])
            .arg(&host.data),
        30,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let window: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The link (the QR code's content) carries what the JSON says.
    let link = openwork_host::client::pair::PairLink::parse(window["uri"].as_str().unwrap())
        .expect("a pairing link");
    assert_eq!(
        link.address,
        format!("{}:{}", window["host"].as_str().unwrap(), window["port"])
    );
    assert_eq!(link.code, window["code"].as_str().unwrap());
    assert_eq!(link.fingerprint.as_deref(), window["fingerprint"].as_str());
    assert_eq!(link.host_id.as_deref(), window["hostId"].as_str());
    let mut pairing = std::process::Command::new(bin())
        .args(["client", "--client-dir"])
        .arg(client_dir.path())
        .args([
            "pair",
            "--uri",
            window["uri"].as_str().unwrap(),
            "--name",
            "cli-phone",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pending = {
        let mut found = Value::Null;
        wait_until(20, "the pairing request", || {
            let out = output_within(
                std::process::Command::new(bin())
                    .args(["devices", "pending", "--json", "--data-dir"])
                    .arg(&host.data),
                30,
            );
            found = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            found["pending"].as_array().is_some_and(|p| !p.is_empty())
        });
        found
    };
    let request_id = pending["pending"][0]["requestId"].as_str().unwrap();
    assert_eq!(pending["pending"][0]["deviceName"], "cli-phone");
    let approved = output_within(
        std::process::Command::new(bin())
            .args(["devices", "approve", request_id, "--data-dir"])
            .arg(&host.data),
        30,
    );
    assert!(
        approved.status.success(),
        "{}",
        String::from_utf8_lossy(&approved.stderr)
    );
    assert!(wait_within(&mut pairing, 30).success());
    let run = output_within(
        std::process::Command::new(bin())
            .args(["client", "--client-dir"])
            .arg(client_dir.path())
            .args(["run", "--", "sh", "-c", "echo out; echo err >&2; exit 3"]),
        30,
    );
    assert_eq!(run.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&run.stdout), "out\n");
    assert!(String::from_utf8_lossy(&run.stderr).starts_with("err\n"));
    let tasks = output_within(
        std::process::Command::new(bin())
            .args(["client", "--client-dir"])
            .arg(client_dir.path())
            .args(["tasks", "--json"]),
        30,
    );
    let tasks: Value = serde_json::from_slice(&tasks.stdout).unwrap();
    let task_id = tasks["tasks"][0]["taskId"].as_str().unwrap();
    let logs = output_within(
        std::process::Command::new(bin())
            .args(["client", "--client-dir"])
            .arg(client_dir.path())
            .args(["logs", task_id, "--follow"]),
        30,
    );
    assert_eq!(String::from_utf8_lossy(&logs.stdout), "out\n");
    assert_eq!(logs.status.code(), Some(3));
    let health = output_within(
        std::process::Command::new(bin())
            .args(["client", "--client-dir"])
            .arg(client_dir.path())
            .args(["health", "--json"]),
        30,
    );
    let health: Value = serde_json::from_slice(&health.stdout).unwrap();
    assert_eq!(health["hostName"], window["hostName"]);
}

/// A command on a terminal (a pty from `script`): what it prints arrives on
/// a channel, what the test writes is typed at it.
struct OnTerminal {
    child: std::process::Child,
    typing: std::process::ChildStdin,
    output: std::sync::mpsc::Receiver<Vec<u8>>,
    /// Everything printed so far (a read may end inside a UTF-8 sequence).
    raw: Vec<u8>,
    seen: String,
}

impl OnTerminal {
    fn start(command: &str) -> OnTerminal {
        let mut child = std::process::Command::new("script")
            .args(["-qec", command, "/dev/null"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("script (util-linux) runs the command on a pty");
        let typing = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let (sender, output) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || sender.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        });
        OnTerminal {
            child,
            typing,
            output,
            raw: Vec::new(),
            seen: String::new(),
        }
    }

    /// Reads one more piece of output; false when none came in time.
    fn read_more(&mut self, deadline: std::time::Instant) -> bool {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match self.output.recv_timeout(left) {
            Ok(bytes) => {
                self.raw.extend_from_slice(&bytes);
                self.seen = String::from_utf8_lossy(&self.raw).replace('\r', "");
                true
            }
            Err(_) => false,
        }
    }

    /// Reads until the output contains `text` (the terminal's `\r` removed);
    /// returns everything seen so far.
    fn until(&mut self, text: &str, secs: u64) -> &str {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        while !self.seen.contains(text) {
            if !self.read_more(deadline) {
                panic!(
                    "no {text:?} within {secs} s; the terminal shows:\n{}",
                    self.seen
                );
            }
        }
        &self.seen
    }

    /// The first whole printed line containing `text`, trimmed.
    fn line_with(&mut self, text: &str, secs: u64) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(at) = self.seen.find(text)
                && let Some(end) = self.seen[at..].find('\n')
            {
                let start = self.seen[..at].rfind('\n').map_or(0, |i| i + 1);
                return self.seen[start..at + end].trim().to_owned();
            }
            if !self.read_more(deadline) {
                panic!("no line with {text:?} within {secs} s:\n{}", self.seen);
            }
        }
    }

    fn type_line(&mut self, line: &str) {
        use std::io::Write;
        self.typing
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }
}

impl Drop for OnTerminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn pair_shows_the_code_and_a_qr_code_of_the_link_and_asks_the_owner_on_a_terminal() {
    let host = fast_pairing();
    let client_dir = tempfile::tempdir().unwrap();
    for (answer, approved) in [("n", false), ("y", true)] {
        let mut pair = OnTerminal::start(&format!(
            "{} pair --ttl 120 --data-dir {}",
            bin(),
            host.data.display()
        ));
        // The web app's pairing URL, which `client pair --uri` takes as well.
        let uri = pair.line_with("/#pair?", 20);
        let shown = pair.seen.clone();
        let link = openwork_host::client::pair::PairLink::parse(&uri).expect("a pairing link");
        let status = output_within(
            std::process::Command::new(bin())
                .args(["status", "--json", "--data-dir"])
                .arg(&host.data),
            30,
        );
        let status: Value = serde_json::from_slice(&status.stdout).unwrap();
        assert_eq!(link.fingerprint.as_deref(), status["fingerprint"].as_str());
        assert_eq!(link.host_id.as_deref(), status["hostId"].as_str());
        assert_eq!(link.code.len(), 8);
        assert!(
            shown.contains(&format!(
                "Code:         {} {}",
                &link.code[..4],
                &link.code[4..]
            )),
            "{shown}"
        );
        // The QR code printed is the link's (the same renderer, so the same text).
        let qr = qrcode::QrCode::new(uri.as_bytes())
            .unwrap()
            .render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .quiet_zone(true)
            .build();
        assert!(shown.contains(&qr), "the QR code of {uri} in:\n{shown}");

        // The device pairs by address and code; the owner answers at the prompt.
        let name = format!("pty-phone-{answer}");
        let mut device = std::process::Command::new(bin())
            .args(["client", "--client-dir"])
            .arg(client_dir.path())
            .args(["pair", &link.address, "--code", &link.code, "--name", &name])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let asked = pair.until("Approve this device? [y/N]", 20).to_owned();
        assert!(
            asked.contains(&format!("Device \"{name}\" from 127.0.0.1")),
            "{asked}"
        );
        assert!(asked.contains("tasks.run"), "the scopes are shown: {asked}");
        pair.type_line(answer);
        let device_status = wait_within(&mut device, 30);
        let device_err = read_to_end_within(device.stderr.take().unwrap(), 10);
        let device_err = String::from_utf8_lossy(&device_err);
        assert_eq!(device_status.success(), approved, "{device_err}");
        let pair_status = wait_within(&mut pair.child, 30);
        let hosts = openwork_host::client::KnownHosts::load(client_dir.path()).unwrap();
        if approved {
            assert!(pair_status.success());
            pair.until("Paired: device", 5);
            let known = hosts.find(None).unwrap();
            assert_eq!(Some(&known.fingerprint), link.fingerprint.as_ref());
            assert_eq!(known.address, link.address);
        } else {
            assert!(!pair_status.success());
            assert!(device_err.contains("declined"), "{device_err}");
            assert!(
                hosts.all().is_empty(),
                "nothing is saved for a denied device"
            );
        }
    }
}

#[test]
fn the_owner_s_prompt_says_when_a_device_gives_up_and_asks_again_when_it_retries() {
    let host = fast_pairing();
    let client_dir = tempfile::tempdir().unwrap();
    let mut pair = OnTerminal::start(&format!(
        "{} pair --ttl 120 --data-dir {}",
        bin(),
        host.data.display()
    ));
    let uri = pair.line_with("/#pair?", 20);
    let link = openwork_host::client::pair::PairLink::parse(&uri).expect("a pairing link");
    let device = || {
        std::process::Command::new(bin())
            .args(["client", "--client-dir"])
            .arg(client_dir.path())
            .args([
                "pair",
                &link.address,
                "--code",
                &link.code,
                "--name",
                "impatient",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut first = device();
    pair.until("Approve this device? [y/N]", 20);
    // The person at the device presses Ctrl-C before the owner answers.
    signal(first.id(), nix::sys::signal::Signal::SIGINT);
    wait_within(&mut first, 10);
    // The notice is two lines written one after the other: wait for the second.
    let told = pair
        .until("can try again with the same code", 10)
        .to_owned();
    assert!(told.contains("is no longer waiting"), "{told}");
    assert!(told.contains("\"impatient\""), "{told}");
    // The retry is asked about afresh, and a yes pairs it.
    let mut retry = device();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while pair.seen.matches("Approve this device? [y/N]").count() < 2 {
        assert!(
            pair.read_more(deadline),
            "the retry was not asked about:\n{}",
            pair.seen
        );
    }
    pair.type_line("y");
    let status = wait_within(&mut retry, 30);
    let err = read_to_end_within(retry.stderr.take().unwrap(), 10);
    assert!(status.success(), "{}", String::from_utf8_lossy(&err));
    assert!(wait_within(&mut pair.child, 30).success());
    pair.until("Paired: device", 5);
}

#[test]
fn status_reports_the_bound_tls_address_and_the_fingerprint() {
    let host = TestHost::started();
    let out = output_within(
        std::process::Command::new(bin())
            .args(["status", "--json", "--data-dir"])
            .arg(&host.data),
        30,
    );
    assert!(out.status.success());
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tls = status["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["transport"] == "tls")
        .unwrap();
    assert!(tls["address"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(status["fingerprint"].as_str().unwrap().len(), 64);
}

#[tokio::test]
async fn a_device_revokes_itself_gets_the_answer_and_its_credential_stops_working() {
    let host = fast_pairing();
    let device = host.pair_device("phone", None).await;
    let mut first = device_session(&device).await;
    let mut second = device_session(&device).await;
    let mut owner = host.connect().await;
    // The owner has nothing to revoke of its own.
    let err = within(10, owner.call::<_, Value>("devices.revokeSelf", json!({})))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("devices.revoke"), "{err}");

    let revoked: Value = within(10, first.call("devices.revokeSelf", json!({})))
        .await
        .unwrap();
    assert_eq!(revoked["deviceId"], device.device_id.as_str());
    assert_eq!(revoked["closedConnections"], 1, "the other connection");
    // Then the calling connection closes.
    within(10, async { while first.next_message().await.is_ok() {} }).await;
    let err = within(10, second.call::<_, Value>("$/ping", json!({})))
        .await
        .unwrap_err();
    assert!(!err.to_string().is_empty());
    let listed = listed_device(&mut owner, &device.device_id).await;
    assert!(listed["revokedAt"].is_string(), "{listed}");
    let err = within(10, open_session(&device, "again"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("revoked"), "{err}");
}

#[tokio::test]
async fn capabilities_name_the_workspace_roots_for_devices_that_may_run_tasks() {
    let host = fast_pairing();
    let runner = host.pair_device("runner", None).await;
    let mut runner = device_session(&runner).await;
    let caps: Value = within(10, runner.call("capabilities.get", json!({})))
        .await
        .unwrap();
    assert_eq!(
        caps["workspaceRoots"],
        json!([host.work.display().to_string()])
    );
    let reader = host
        .pair_device("reader", Some(vec![Scope::TasksRead]))
        .await;
    let mut reader = device_session(&reader).await;
    let caps: Value = within(10, reader.call("capabilities.get", json!({})))
        .await
        .unwrap();
    assert!(caps.get("workspaceRoots").is_none(), "{caps}");
}
