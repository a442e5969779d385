//! The owner's console link (`openwork-host ui`), over real TLS on loopback:
//! it enrols a browser once, not after it expires, not from a page on another
//! origin or a rebinding name, not off a WebSocket; the device it makes acts
//! as the owner; and `metrics.series` counts what happened, hour by hour.

mod common;
#[path = "common/web.rs"]
mod web;

use std::process::Command;
use std::time::Duration;

use base64::Engine;
use common::process::output_within;
use common::*;
use futures::{SinkExt, StreamExt};
use p256::ecdsa::SigningKey;
use p256::ecdsa::signature::Signer;
use p256::pkcs8::EncodePublicKey;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use web::{Ws, tls, websocket_as};

const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// `/rpc` as a WebSocket, with `Host` and `Origin` as given; the HTTP status when refused.
async fn websocket(address: &str, host: &str, origin: &str) -> Result<Ws, u16> {
    websocket_as(address, host, Some(origin)).await
}

async fn call(ws: &mut Ws, id: u64, method: &str, params: Value) -> Value {
    let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    ws.send(Message::text(message.to_string())).await.unwrap();
    loop {
        match within(10, ws.next()).await {
            Some(Ok(Message::Text(text))) => {
                let reply: Value = serde_json::from_str(&text).unwrap();
                if reply["id"] == json!(id) {
                    return reply;
                }
            }
            Some(Ok(_)) => continue,
            other => panic!("expected a reply, got {other:?}"),
        }
    }
}

fn new_key() -> (SigningKey, String) {
    let key = SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let spki = key.verifying_key().to_public_key_der().unwrap();
    let encoded = B64URL.encode(spki.as_bytes());
    (key, encoded)
}

fn secret_of(url: &str) -> String {
    let fragment = url.split_once("#console?").expect("a console link").1;
    fragment
        .split('&')
        .find_map(|kv| kv.strip_prefix("secret="))
        .expect("a secret")
        .to_owned()
}

/// `openwork-host ui --json [--ttl N]` on the host's data dir.
fn ui(host: &TestHost, ttl: Option<u64>) -> Value {
    let mut command = Command::new(bin());
    command
        .args(["ui", "--json", "--data-dir"])
        .arg(&host.data)
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY");
    if let Some(ttl) = ttl {
        command.args(["--ttl", &ttl.to_string()]);
    }
    let out = output_within(&mut command, 20);
    assert!(
        out.status.success(),
        "ui: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ui --json prints the link")
}

fn port_of(address: &str) -> u16 {
    address.rsplit_once(':').unwrap().1.parse().unwrap()
}

#[tokio::test]
async fn a_console_link_enrols_one_browser_once_as_the_owner() {
    let host = TestHost::started();
    let address = host.tls_address().await;
    let port = port_of(&address);
    let link = ui(&host, None);
    let url = link["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("https://localhost:{port}/#console?secret=")),
        "{url}"
    );
    let secret = secret_of(url);
    assert_eq!(B64URL.decode(&secret).unwrap().len(), 32);

    // Without `--json` and without a display: the link is printed, nothing fails.
    let printed = output_within(
        Command::new(bin())
            .args(["ui", "--data-dir"])
            .arg(&host.data)
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY"),
        20,
    );
    assert!(printed.status.success());
    let text = String::from_utf8_lossy(&printed.stdout);
    assert!(text.contains("#console?secret="), "{text}");
    assert!(text.contains("no display"), "{text}");

    let origin = format!("https://localhost:{port}");
    let (key, public_key) = new_key();
    let mut ws = websocket(&address, &format!("localhost:{port}"), &origin)
        .await
        .unwrap();
    let enrolled = call(
        &mut ws,
        1,
        "console.enrol",
        json!({"secret": secret, "publicKey": public_key}),
    )
    .await;
    let result = &enrolled["result"];
    let device_id = result["deviceId"]
        .as_str()
        .unwrap_or_else(|| panic!("{enrolled}"));
    assert!(device_id.starts_with("o_"), "{device_id}");
    assert!(result.get("token").is_none(), "a key device: {enrolled}");
    let scopes: Vec<&str> = result["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(
        scopes,
        [
            "tasks.run",
            "tasks.read",
            "permissions.reply",
            "opencode",
            "admin"
        ]
    );

    // The same link again, on the same connection or another: used up.
    let again = call(
        &mut ws,
        2,
        "console.enrol",
        json!({"secret": secret, "publicKey": new_key().1}),
    )
    .await;
    assert_eq!(again["error"]["code"], -32001, "{again}");
    assert!(
        again["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already used"),
        "{again}"
    );
    assert!(
        again["error"]["data"]["action"]
            .as_str()
            .unwrap()
            .contains("openwork-host ui"),
        "{again}"
    );

    // The console signs in like a paired browser and acts as the owner
    // (devices, pairing) without `[devices] remote_admin`.
    let mut ws = websocket(&address, &format!("localhost:{port}"), &origin)
        .await
        .unwrap();
    let nonce = call(&mut ws, 1, "auth.challenge", json!({})).await["result"]["nonce"]
        .as_str()
        .unwrap()
        .to_owned();
    let message = format!(
        "openwork-browser-auth-v1\n{}\n{origin}\n{nonce}\n{device_id}",
        result["hostId"].as_str().unwrap()
    );
    let signature: p256::ecdsa::Signature = key.sign(message.as_bytes());
    let init = call(
        &mut ws,
        2,
        "initialize",
        json!({"auth": {"deviceId": device_id, "nonce": nonce, "signature": B64URL.encode(signature.to_bytes())}}),
    )
    .await;
    assert!(init["result"]["hostId"].is_string(), "{init}");
    let listed = call(&mut ws, 3, "devices.list", json!({})).await;
    let devices = listed["result"]["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1, "{listed}");
    assert_eq!(devices[0]["connections"], 1);
    let window = call(&mut ws, 4, "pairing.open", json!({"ttlS": 60})).await;
    assert!(
        window["result"]["webUri"]
            .as_str()
            .unwrap()
            .contains("/#pair?code="),
        "{window}"
    );
    let qr = window["result"]["webQr"].as_array().unwrap();
    assert!(qr.len() >= 21 && qr.iter().all(|row| row.as_str().unwrap().len() == qr.len()));
    let overview = call(&mut ws, 5, "console.overview", json!({})).await;
    assert!(
        overview["result"]["policy"].as_array().unwrap().len() > 5,
        "{overview}"
    );
    // As the owner, it may make a link for another browser on this machine.
    let link = call(&mut ws, 6, "console.link", json!({})).await;
    assert!(link["result"]["url"].is_string(), "{link}");

    // The used link counted as a failed credential.
    let mut owner = host.connect().await;
    let metrics: Value = within(10, owner.call("metrics.get", json!({})))
        .await
        .unwrap();
    assert_eq!(metrics["connections"]["authFailures"], 1, "{metrics}");

    // Revoked like any device: its socket closes, its key stops working.
    let revoked: Value = within(
        10,
        owner.call("devices.revoke", json!({"deviceId": device_id})),
    )
    .await
    .unwrap();
    assert_eq!(revoked["closedConnections"], 1, "{revoked}");
    let closed = within(10, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return true,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    assert!(closed);
}

#[tokio::test]
async fn an_expired_link_enrols_nothing() {
    let host = TestHost::started();
    let address = host.tls_address().await;
    let port = port_of(&address);
    let link = ui(&host, Some(1));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut ws = websocket(
        &address,
        &format!("localhost:{port}"),
        &format!("https://localhost:{port}"),
    )
    .await
    .unwrap();
    let expired = call(
        &mut ws,
        1,
        "console.enrol",
        json!({"secret": secret_of(link["url"].as_str().unwrap()), "publicKey": new_key().1}),
    )
    .await;
    assert_eq!(expired["error"]["code"], -32001, "{expired}");
    assert!(
        expired["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    let made_up = call(
        &mut ws,
        2,
        "console.enrol",
        json!({"secret": B64URL.encode([7u8; 32]), "publicKey": new_key().1}),
    )
    .await;
    assert_eq!(made_up["error"]["code"], -32001, "{made_up}");
    let mut owner = host.connect().await;
    let devices: Value = within(10, owner.call("devices.list", json!({})))
        .await
        .unwrap();
    assert_eq!(devices["devices"], json!([]));
}

#[tokio::test]
async fn only_a_page_on_a_loopback_origin_can_use_a_link() {
    // `desk.example` is one of the host's own names: its pages reach `/rpc`.
    let mut host = TestHost::new("[network]\nadvertise_address = \"desk.example\"\n");
    host.start();
    let address = host.tls_address().await;
    let port = port_of(&address);
    let link = ui(&host, None);
    let secret = secret_of(link["url"].as_str().unwrap());
    let params = json!({"secret": secret, "publicKey": new_key().1});

    // Another site's page, and a rebinding name, get nothing at all.
    let foreign = websocket(
        &address,
        &format!("localhost:{port}"),
        &format!("https://evil.example:{port}"),
    )
    .await;
    assert_eq!(foreign.err(), Some(403));
    let rebinding = websocket(
        &address,
        &format!("evil.example:{port}"),
        &format!("https://evil.example:{port}"),
    )
    .await;
    assert_eq!(rebinding.err(), Some(421));

    // A page on one of the host's LAN names is refused by the link, which is
    // not used up by it.
    let mut lan = websocket(
        &address,
        &format!("desk.example:{port}"),
        &format!("https://desk.example:{port}"),
    )
    .await
    .expect("an own name reaches /rpc");
    let refused = call(&mut lan, 1, "console.enrol", params.clone()).await;
    assert_eq!(refused["error"]["code"], -32002, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("https://desk.example"),
        "{refused}"
    );

    // Not on a WebSocket: the raw protocol cannot redeem a link.
    let mut native =
        openwork_host::client::tls::connect_tls(&address, None, Duration::from_secs(10))
            .await
            .expect("a raw TLS connection")
            .connection;
    let raw: Result<Value, _> = within(10, native.call("console.enrol", params.clone())).await;
    let raw = raw.expect_err("refused off a WebSocket");
    assert!(format!("{raw}").contains("WebSocket"), "{raw}");

    // From localhost, the same link still works (once).
    let mut local = websocket(
        &address,
        &format!("localhost:{port}"),
        &format!("https://localhost:{port}"),
    )
    .await
    .unwrap();
    let enrolled = call(&mut local, 1, "console.enrol", params).await;
    assert!(enrolled["result"]["deviceId"].is_string(), "{enrolled}");
}

#[tokio::test]
async fn metrics_series_counts_tasks_and_connections_by_the_hour() {
    let host = TestHost::started();
    let mut owner = host.connect().await;
    for command in ["true", "exit 2", "true"] {
        let task = run(&mut owner, json!({"command": command})).await;
        follow(&mut owner, &task, 20).await;
    }
    let address = host.tls_address().await;
    for _ in 0..2 {
        drop(tls(&address, &[b"openwork/1"]).await);
    }
    let series: Value = within(10, owner.call("metrics.series", json!({"hours": 3})))
        .await
        .unwrap();
    let buckets = series["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 3, "{series}");
    assert_eq!(series["bucketS"], 3600);
    let now = &buckets[2];
    assert_eq!(now["tasks"]["succeeded"], 2, "{series}");
    assert_eq!(now["tasks"]["failed"], 1, "{series}");
    assert!(now["connections"].as_u64().unwrap() >= 2, "{series}");
    assert_eq!(buckets[0]["tasks"]["succeeded"], 0);
    let bad: Result<Value, _> = within(10, owner.call("metrics.series", json!({"hours": 0}))).await;
    assert!(bad.is_err());
}
