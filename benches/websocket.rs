//! The browser transport next to the raw TLS protocol, in the same run, over
//! loopback, printed as figures:
//! - `$/ping` per second, sequential, on one connection of each;
//! - connect + TLS (+ WebSocket upgrade) + `initialize` latency, p50 and p99
//!   (a native device with its token; a browser device with `auth.challenge`
//!   and a P-256 signature, as the web app does).
//!
//! Run: `cargo bench --bench websocket` (`BENCH_PINGS`, `BENCH_CONNECTS`
//! change the counts).

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use futures::{SinkExt, StreamExt};
use openwork_host::client::{connect_unix, open_session};
use openwork_host::pairing::crypto;
use p256::ecdsa::SigningKey;
use p256::ecdsa::signature::Signer;
use p256::pkcs8::EncodePublicKey;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

mod support;
use support::{BenchHost, env_number, percentile};

type Ws = WebSocketStream<TlsStream<TcpStream>>;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Connects, upgrades `/rpc` with the host's own origin.
async fn websocket(address: &str) -> Ws {
    let verifier = openwork_host::transport::tls::PinnedCert::new(None);
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("tls13")
    .dangerous()
    .with_custom_certificate_verifier(verifier)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(address).await.expect("connect");
    let _ = tcp.set_nodelay(true);
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(openwork_host::transport::tls::server_name(), tcp)
        .await
        .expect("handshake");
    let mut request = format!("wss://{address}/rpc")
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "origin",
        format!("https://{address}").parse().expect("origin"),
    );
    tokio_tungstenite::client_async(request, tls)
        .await
        .expect("upgrade")
        .0
}

async fn call(ws: &mut Ws, id: u64, method: &str, params: Value) -> Value {
    let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    ws.send(Message::text(message.to_string()))
        .await
        .expect("send");
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                let reply: Value = serde_json::from_str(&text).expect("json");
                if reply["id"] == id {
                    return reply;
                }
            }
            Some(Ok(_)) => continue,
            other => panic!("the WebSocket ended: {other:?}"),
        }
    }
}

/// A browser's paired device: id, key, host id.
struct Browser {
    device_id: String,
    key: SigningKey,
    host_id: String,
}

/// Pairs a browser device over the WebSocket, as the web app does.
async fn pair_browser(host: &BenchHost, address: &str) -> Browser {
    let mut owner = connect_unix(&host.socket()).await.expect("owner");
    let window: Value = owner
        .call("pairing.open", json!({"ttlS": 60}))
        .await
        .expect("window");
    let mut ws = websocket(address).await;
    let key = SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let spki = key
        .verifying_key()
        .to_public_key_der()
        .expect("spki")
        .as_bytes()
        .to_vec();
    let web = openwork_host::transport::websocket::web_channel_binding();
    let code = window["code"].as_str().expect("code");
    let start = crypto::client_start(code, &web);
    let begun = call(
        &mut ws,
        1,
        "pairing.begin",
        json!({"deviceName": "bench-browser", "spake": B64.encode(&start.message), "publicKey": B64URL.encode(&spki)}),
    )
    .await;
    let result = &begun["result"];
    let scopes: Vec<String> = serde_json::from_value(result["scopes"].clone()).expect("scopes");
    let ctx = crypto::Context {
        tls_exporter: &web,
        host_fingerprint: window["fingerprint"].as_str().expect("fp"),
        device_name: "bench-browser",
        scopes: &scopes,
        public_key: Some(&spki),
    };
    let host_message = B64
        .decode(result["spake"].as_str().expect("spake"))
        .expect("b64");
    let host_confirm = B64
        .decode(result["hostConfirm"].as_str().expect("confirm"))
        .expect("b64");
    let mac =
        crypto::client_finish(start, &ctx, &host_message, &host_confirm).expect("host confirmed");
    let confirm = json!({"jsonrpc": "2.0", "id": 2, "method": "pairing.confirm",
        "params": {"exchangeId": result["exchangeId"], "clientConfirm": B64.encode(mac)}});
    ws.send(Message::text(confirm.to_string()))
        .await
        .expect("send");
    support::approve_next(&mut owner).await;
    let paired = loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                break serde_json::from_str::<Value>(&text).expect("json");
            }
            Some(Ok(_)) => continue,
            other => panic!("the WebSocket ended: {other:?}"),
        }
    };
    Browser {
        device_id: paired["result"]["deviceId"]
            .as_str()
            .expect("id")
            .to_owned(),
        key,
        host_id: paired["result"]["hostId"]
            .as_str()
            .expect("host id")
            .to_owned(),
    }
}

/// Connect + TLS + upgrade + challenge + signed `initialize`.
async fn browser_session(address: &str, browser: &Browser) -> Ws {
    let mut ws = websocket(address).await;
    let nonce = call(&mut ws, 1, "auth.challenge", json!({})).await;
    let nonce = nonce["result"]["nonce"].as_str().expect("nonce").to_owned();
    let message = format!(
        "openwork-browser-auth-v1\n{}\nhttps://{address}\n{nonce}\n{}",
        browser.host_id, browser.device_id
    );
    let signature: p256::ecdsa::Signature = browser.key.sign(message.as_bytes());
    let auth = json!({"deviceId": browser.device_id, "nonce": nonce, "signature": B64URL.encode(signature.to_bytes())});
    let init = call(&mut ws, 2, "initialize", json!({"auth": auth})).await;
    assert!(init["result"].is_object(), "{init}");
    ws
}

fn print_latency(what: &str, mut latencies: Vec<Duration>) {
    latencies.sort();
    println!(
        "{what:<34} p50 {:.2} ms, p99 {:.2} ms ({} connections)",
        percentile(&latencies, 0.50).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        latencies.len()
    );
}

fn main() {
    support::start();
    let pings: u32 = env_number("BENCH_PINGS", 20_000);
    let connects: usize = env_number("BENCH_CONNECTS", 300);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let host = BenchHost::start("[opencode]\nenabled = \"off\"\n");
        let address = host.tls_address().await;
        let native = host.pair_device().await;
        let browser = pair_browser(&host, &address).await;

        // $/ping, sequential, one connection each.
        let mut conn = open_session(&native, "bench").await.expect("session");
        let start = Instant::now();
        for _ in 0..pings {
            let _: Value = conn.call("$/ping", json!({})).await.expect("ping");
        }
        println!(
            "ping, sequential, raw TLS:         {:>9.0} calls/s",
            f64::from(pings) / start.elapsed().as_secs_f64()
        );
        let mut ws = browser_session(&address, &browser).await;
        let start = Instant::now();
        for n in 0..pings {
            let reply = call(&mut ws, 100 + u64::from(n), "$/ping", json!({})).await;
            assert!(reply["result"].is_object());
        }
        println!(
            "ping, sequential, WebSocket:       {:>9.0} calls/s",
            f64::from(pings) / start.elapsed().as_secs_f64()
        );

        // Connect + handshakes + initialize, one after another.
        let mut raw = Vec::with_capacity(connects);
        let mut web = Vec::with_capacity(connects);
        for _ in 0..connects {
            let start = Instant::now();
            let conn = open_session(&native, "bench").await.expect("session");
            raw.push(start.elapsed());
            drop(conn);
            let start = Instant::now();
            let ws = browser_session(&address, &browser).await;
            web.push(start.elapsed());
            drop(ws);
        }
        print_latency("connect+TLS+initialize, raw:", raw);
        print_latency("connect+TLS+WS+initialize, web:", web);
    });
}
