//! The TLS port's browser side, over real TLS on loopback: ALPN picks HTTP,
//! the web app is served with its headers, Host and Origin are checked, and
//! `/rpc` is a WebSocket running the same session as the raw protocol.

mod common;
#[path = "common/web.rs"]
mod web;

use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use web::{Ws, tls, tls_with, websocket_as};

/// A raw HTTP/1.1 exchange: `request` written as is (with `Connection:
/// close`), the reply read to its end and split into status, headers, body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn http(address: &str, alpn: &[&[u8]], request: &str) -> Reply {
    let mut stream = tls(address, alpn).await;
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    let _ = within(10, stream.read_to_end(&mut bytes)).await;
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(&bytes)));
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: bytes[split + 4..].to_vec(),
    }
}

fn get(path: &str, host: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
}

fn port(address: &str) -> u16 {
    address.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// Opens `/rpc` as a WebSocket with `origin`; the HTTP status when refused.
async fn websocket(address: &str, origin: Option<&str>) -> Result<Ws, u16> {
    websocket_as(address, address, origin).await
}

fn own_origin(address: &str) -> String {
    format!("https://{address}")
}

/// Sends one text frame and returns the next text frame, parsed.
async fn exchange(ws: &mut Ws, message: Value) -> Value {
    ws.send(Message::text(message.to_string())).await.unwrap();
    next_text(ws).await
}

async fn next_text(ws: &mut Ws) -> Value {
    loop {
        match within(10, ws.next()).await {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Waits for the host to close the socket; returns the close code it gave.
async fn closed(ws: &mut Ws) -> Option<CloseCode> {
    loop {
        match within(10, ws.next()).await {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

/// The policy the page needs: its own origin only, and the one inline script
/// and stylesheet of web/dist/index.html by their SHA-256 (computed here
/// from the file, independently of build.rs).
fn csp() -> String {
    use base64::Engine as _;
    let index =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/web/dist/index.html"))
            .expect("web/dist/index.html");
    let inner = |open: &str, close: &str| {
        let start = index.find(open).expect("an inline element") + open.len();
        let end = start + index[start..].find(close).expect("its end");
        let digest = <sha2::Sha256 as sha2::Digest>::digest(&index.as_bytes()[start..end]);
        format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest)
        )
    };
    format!(
        "default-src 'self'; script-src 'self' {} {}; connect-src 'self'; img-src 'self' data:; style-src 'self' {}; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        // The bundle, and the one-line script that dials early.
        inner("<script type=\"module\">", "</script>"),
        inner("<script>", "</script>"),
        inner("<style>", "</style>")
    )
}

fn assert_secure(reply: &Reply) {
    assert_eq!(
        reply.header("content-security-policy"),
        Some(csp().as_str())
    );
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(reply.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(reply.header("x-frame-options"), Some("DENY"));
    assert_eq!(reply.header("set-cookie"), None);
    assert!(
        !reply
            .headers
            .iter()
            .any(|(n, _)| n.to_ascii_lowercase().starts_with("access-control-")),
        "no CORS headers: {:?}",
        reply.headers
    );
}

#[tokio::test]
async fn a_browser_gets_the_web_app_with_strict_headers_and_the_raw_protocol_is_unchanged() {
    let host = TestHost::started();
    let address = host.tls_address().await;
    let device = host.pair_device("laptop", None).await;
    let mut native = device_session(&device).await;

    for alpn in [&[&b"h2"[..], b"http/1.1"][..], &[]] {
        let reply = http(&address, alpn, &get("/", &address, "")).await;
        assert_eq!(reply.status, 200, "ALPN {alpn:?}");
        assert_secure(&reply);
        assert_eq!(reply.header("cache-control"), Some("no-cache"));
        assert!(
            reply
                .header("content-type")
                .is_some_and(|t| t.starts_with("text/html"))
        );
        assert!(String::from_utf8_lossy(&reply.body).contains("<html"));
        let etag = reply.header("etag").expect("an ETag").to_owned();

        let again = http(
            &address,
            alpn,
            &get("/", &address, &format!("If-None-Match: {etag}\r\n")),
        )
        .await;
        assert_eq!(again.status, 304);
        assert!(again.body.is_empty());
        assert_secure(&again);
    }

    let zipped = http(
        &address,
        &[b"http/1.1"],
        &get("/index.html", &address, "Accept-Encoding: gzip, br\r\n"),
    )
    .await;
    assert_eq!(zipped.status, 200);
    assert_eq!(zipped.header("content-encoding"), Some("gzip"));
    assert_eq!(&zipped.body[..2], &[0x1f, 0x8b], "a gzip stream");

    let missing = http(&address, &[b"http/1.1"], &get("/nope.js", &address, "")).await;
    assert_eq!(missing.status, 404);
    assert_secure(&missing);

    // The raw protocol still answers on the same port.
    let pong: Value = within(10, native.call("$/ping", json!({}))).await.unwrap();
    assert_eq!(pong, json!({}));
}

#[tokio::test]
async fn a_request_naming_another_host_is_misdirected() {
    let host = TestHost::started();
    let address = host.tls_address().await;
    let port = port(&address);
    for name in [
        format!("evil.example:{port}"),
        format!("localhost:{}", port.wrapping_add(1)),
        "localhost".to_owned(),
        format!("192.0.2.10:{port}"),
    ] {
        let reply = http(&address, &[b"http/1.1"], &get("/", &name, "")).await;
        assert_eq!(reply.status, 421, "Host: {name}");
        assert_secure(&reply);
        let rpc = http(
            &address,
            &[b"http/1.1"],
            &get(
                "/rpc",
                &name,
                &format!("Origin: https://{name}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
            ),
        )
        .await;
        assert_eq!(rpc.status, 421, "/rpc with Host: {name}");
    }
    for name in [format!("localhost:{port}"), format!("[::1]:{port}")] {
        let reply = http(&address, &[b"http/1.1"], &get("/", &name, "")).await;
        assert_eq!(reply.status, 200, "Host: {name}");
    }
}

#[tokio::test]
async fn rpc_is_refused_to_other_origins() {
    let host = TestHost::started();
    let address = host.tls_address().await;
    let port = port(&address);
    for origin in [
        None,
        Some("https://evil.example".to_owned()),
        Some(format!("http://{address}")),
        Some(format!("https://evil.example:{port}")),
        Some("null".to_owned()),
    ] {
        let refused = websocket(&address, origin.as_deref()).await;
        assert_eq!(refused.err(), Some(403), "Origin {origin:?}");
    }
    let ws = websocket(&address, Some(&own_origin(&address))).await;
    assert!(ws.is_ok());
    let by_name = websocket(&address, Some(&format!("https://localhost:{port}"))).await;
    assert!(by_name.is_ok(), "another of the host's own names");
}

#[tokio::test]
async fn rpc_over_a_websocket_is_the_same_protocol_with_the_same_limits() {
    let host = TestHost::started();
    let address = host.tls_address().await;
    let mut ws = websocket(&address, Some(&own_origin(&address)))
        .await
        .unwrap();

    let pong = exchange(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 1, "method": "$/ping"}),
    )
    .await;
    assert_eq!(pong, json!({"jsonrpc": "2.0", "id": 1, "result": {}}));

    let batch = exchange(
        &mut ws,
        json!([
            {"jsonrpc": "2.0", "id": 2, "method": "$/ping"},
            {"jsonrpc": "2.0", "id": 3, "method": "task.list", "params": {}},
        ]),
    )
    .await;
    let replies = batch.as_array().expect("a batch reply");
    assert_eq!(replies.len(), 2);
    assert_eq!(replies[0]["result"], json!({}));
    assert_eq!(replies[1]["error"]["code"], -32001, "{batch}");

    // Before authentication, frames are as small as on the raw protocol.
    let big = json!({"jsonrpc": "2.0", "id": 4, "method": "$/ping", "params": {"pad": "x".repeat(70_000)}});
    let refused = exchange(&mut ws, big).await;
    assert!(refused["error"].is_object(), "{refused}");

    let token = exchange(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 5, "method": "$/ping"}),
    )
    .await;
    assert_eq!(token["id"], 5);

    // A binary frame ends the connection with 1003.
    ws.send(Message::binary(b"{}".to_vec())).await.unwrap();
    assert_eq!(closed(&mut ws).await, Some(CloseCode::Unsupported));
}

#[tokio::test]
async fn the_host_closes_the_websocket_when_the_session_ends() {
    let host = TestHost::started();
    let address = host.tls_address().await;
    let mut ws = websocket(&address, Some(&own_origin(&address)))
        .await
        .unwrap();
    ws.send(Message::text(
        json!({"jsonrpc": "2.0", "method": "exit"}).to_string(),
    ))
    .await
    .unwrap();
    assert_eq!(closed(&mut ws).await, Some(CloseCode::Normal));
}

// ---- A browser's credential and pairing ----

use base64::Engine;
use openwork_host::pairing::crypto;
use p256::ecdsa::SigningKey;
use p256::ecdsa::signature::Signer;
use p256::pkcs8::EncodePublicKey;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A browser that paired: its device id and the key it keeps.
struct Browser {
    device_id: String,
    key: SigningKey,
    host_id: String,
}

fn spki(key: &SigningKey) -> Vec<u8> {
    key.verifying_key()
        .to_public_key_der()
        .unwrap()
        .as_bytes()
        .to_vec()
}

fn request(id: u64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// `pairing.begin` over `ws` as a browser does: the web variant of the
/// exchange, with `public_key` in the transcript. Returns the reply and the
/// client's confirmation (when the host's confirmed).
async fn begin_as_browser(
    ws: &mut Ws,
    code: &str,
    fingerprint: &str,
    public_key: Option<&[u8]>,
) -> (Value, Option<[u8; 32]>) {
    let web = openwork_host::transport::websocket::web_channel_binding();
    let start = crypto::client_start(code, &web);
    let mut params = json!({"deviceName": "browser", "spake": B64.encode(&start.message)});
    if let Some(key) = public_key {
        params["publicKey"] = json!(B64URL.encode(key));
    }
    let begun = exchange(ws, request(1, "pairing.begin", params)).await;
    let Some(result) = begun.get("result") else {
        return (begun, None);
    };
    let scopes: Vec<String> = serde_json::from_value(result["scopes"].clone()).unwrap();
    let ctx = crypto::Context {
        tls_exporter: &web,
        host_fingerprint: fingerprint,
        device_name: "browser",
        scopes: &scopes,
        public_key,
    };
    let host_message = B64.decode(result["spake"].as_str().unwrap()).unwrap();
    let host_confirm = B64.decode(result["hostConfirm"].as_str().unwrap()).unwrap();
    let confirmation = crypto::client_finish(start, &ctx, &host_message, &host_confirm).ok();
    (begun, confirmation)
}

/// Pairs a browser over the WebSocket, approving from the owner's connection.
async fn pair_browser(host: &TestHost, address: &str) -> Browser {
    let mut owner = host.connect().await;
    let window: Value = within(10, owner.call("pairing.open", json!({"ttlS": 120})))
        .await
        .unwrap();
    let mut ws = websocket(address, Some(&own_origin(address)))
        .await
        .unwrap();
    let key = SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let (begun, confirmation) = begin_as_browser(
        &mut ws,
        window["code"].as_str().unwrap(),
        window["fingerprint"].as_str().unwrap(),
        Some(&spki(&key)),
    )
    .await;
    let confirmation = confirmation.unwrap_or_else(|| panic!("host confirmed: {begun}"));
    let confirm = request(
        2,
        "pairing.confirm",
        json!({"exchangeId": begun["result"]["exchangeId"], "clientConfirm": B64.encode(confirmation)}),
    );
    ws.send(Message::text(confirm.to_string())).await.unwrap();
    answer_next_request(&mut owner, "pairing.approve").await;
    let paired = next_text(&mut ws).await;
    let result = &paired["result"];
    assert!(result["deviceId"].is_string(), "{paired}");
    assert!(
        result.get("token").is_none(),
        "a browser holds no token: {paired}"
    );
    Browser {
        device_id: result["deviceId"].as_str().unwrap().to_owned(),
        key,
        host_id: result["hostId"].as_str().unwrap().to_owned(),
    }
}

/// The signed `auth` for `initialize`, over `nonce` and `origin`.
fn signed_auth(browser: &Browser, origin: &str, nonce: &str) -> Value {
    let message = format!(
        "openwork-browser-auth-v1\n{}\n{origin}\n{nonce}\n{}",
        browser.host_id, browser.device_id
    );
    let signature: p256::ecdsa::Signature = browser.key.sign(message.as_bytes());
    json!({"deviceId": browser.device_id, "nonce": nonce, "signature": B64URL.encode(signature.to_bytes())})
}

async fn challenge(ws: &mut Ws) -> String {
    let reply = exchange(ws, request(10, "auth.challenge", json!({}))).await;
    let nonce = reply["result"]["nonce"]
        .as_str()
        .expect("a nonce")
        .to_owned();
    assert_eq!(B64URL.decode(&nonce).unwrap().len(), 32);
    nonce
}

async fn initialize(ws: &mut Ws, auth: Value) -> Value {
    exchange(ws, request(11, "initialize", json!({"auth": auth}))).await
}

#[tokio::test]
async fn a_browser_pairs_with_a_key_and_initializes_with_a_signature_once_per_nonce() {
    let host = TestHost::started();
    let address = host.tls_address().await;
    let origin = own_origin(&address);
    let browser = pair_browser(&host, &address).await;

    let mut ws = websocket(&address, Some(&origin)).await.unwrap();
    let nonce = challenge(&mut ws).await;
    let auth = signed_auth(&browser, &origin, &nonce);
    let ok = initialize(&mut ws, auth.clone()).await;
    assert_eq!(ok["result"]["hostId"], browser.host_id.as_str(), "{ok}");
    assert!(!ok["result"]["scopes"].as_array().unwrap().is_empty());
    let tasks = exchange(&mut ws, request(12, "task.list", json!({}))).await;
    assert!(tasks["result"].is_object(), "{tasks}");

    // The recorded initialize, replayed on another connection: refused,
    // whether or not that connection asked for a nonce of its own.
    for ask in [true, false] {
        let mut other = websocket(&address, Some(&origin)).await.unwrap();
        if ask {
            challenge(&mut other).await;
        }
        let replayed = initialize(&mut other, auth.clone()).await;
        assert_eq!(replayed["error"]["code"], -32001, "{replayed}");
    }

    // A nonce is used up by a failed try as well.
    let mut again = websocket(&address, Some(&origin)).await.unwrap();
    let nonce = challenge(&mut again).await;
    let mut bad = signed_auth(&browser, &origin, &nonce);
    bad["signature"] = json!(B64URL.encode([0u8; 64]));
    assert_eq!(initialize(&mut again, bad).await["error"]["code"], -32001);
    let late = initialize(&mut again, signed_auth(&browser, &origin, &nonce)).await;
    assert_eq!(late["error"]["code"], -32001, "{late}");

    // Signed for another origin: refused.
    let mut elsewhere = websocket(&address, Some(&origin)).await.unwrap();
    let nonce = challenge(&mut elsewhere).await;
    let port = port(&address);
    let wrong = signed_auth(&browser, &format!("https://evil.example:{port}"), &nonce);
    assert_eq!(
        initialize(&mut elsewhere, wrong).await["error"]["code"],
        -32001
    );
}

#[tokio::test]
async fn a_key_device_takes_no_token_and_a_token_device_no_signature() {
    let host = TestHost::started();
    let address = host.tls_address().await;
    let origin = own_origin(&address);
    let browser = pair_browser(&host, &address).await;
    let native = host.pair_device("laptop", None).await;

    // A token for the browser's device, on either transport: refused.
    let mut ws = websocket(&address, Some(&origin)).await.unwrap();
    let token = json!({"deviceId": browser.device_id, "token": ""});
    assert_eq!(initialize(&mut ws, token).await["error"]["code"], -32001);
    let connected = openwork_host::client::tls::connect_tls(
        &address,
        Some(&native.fingerprint),
        std::time::Duration::from_secs(10),
    )
    .await
    .unwrap();
    let mut raw = connected.connection;
    let refused = raw
        .call::<_, Value>(
            "initialize",
            json!({"auth": {"deviceId": browser.device_id, "token": ""}}),
        )
        .await;
    assert!(refused.is_err());

    // A signature on the raw protocol (no origin, no WebSocket): refused.
    let connected = openwork_host::client::tls::connect_tls(
        &address,
        Some(&native.fingerprint),
        std::time::Duration::from_secs(10),
    )
    .await
    .unwrap();
    let mut raw = connected.connection;
    let nonce: Value = raw.call("auth.challenge", json!({})).await.unwrap();
    let nonce = nonce["nonce"].as_str().unwrap();
    let signed = signed_auth(&browser, &origin, nonce);
    assert!(
        raw.call::<_, Value>("initialize", json!({"auth": signed}))
            .await
            .is_err()
    );

    // The native device signing with a key of its own: refused.
    let impostor = Browser {
        device_id: native.device_id.clone(),
        key: SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng),
        host_id: browser.host_id.clone(),
    };
    let mut ws = websocket(&address, Some(&origin)).await.unwrap();
    let nonce = challenge(&mut ws).await;
    let signed = signed_auth(&impostor, &origin, &nonce);
    assert_eq!(initialize(&mut ws, signed).await["error"]["code"], -32001);

    // The native device's token still works over the raw protocol.
    let mut session = device_session(&native).await;
    let pong: Value = within(10, session.call("$/ping", json!({}))).await.unwrap();
    assert_eq!(pong, json!({}));
}

#[tokio::test]
async fn pairing_over_a_websocket_needs_a_key_and_the_raw_protocol_takes_none() {
    let host = TestHost::started();
    let address = host.tls_address().await;
    let mut owner = host.connect().await;
    let window: Value = within(10, owner.call("pairing.open", json!({"ttlS": 120})))
        .await
        .unwrap();
    let (code, fingerprint) = (
        window["code"].as_str().unwrap(),
        window["fingerprint"].as_str().unwrap(),
    );
    let mut ws = websocket(&address, Some(&own_origin(&address)))
        .await
        .unwrap();
    let (refused, _) = begin_as_browser(&mut ws, code, fingerprint, None).await;
    assert_eq!(refused["error"]["code"], -32602, "{refused}");
    let (junk, _) = begin_as_browser(&mut ws, code, fingerprint, Some(b"not a key")).await;
    assert_eq!(junk["error"]["code"], -32602, "{junk}");

    let connected = openwork_host::client::tls::connect_tls(
        &address,
        Some(fingerprint),
        std::time::Duration::from_secs(10),
    )
    .await
    .unwrap();
    let mut raw = connected.connection;
    let key = SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let start = crypto::client_start(code, &connected.exporter);
    let refused = raw
        .call::<_, Value>(
            "pairing.begin",
            json!({"deviceName": "x", "spake": B64.encode(&start.message), "publicKey": B64URL.encode(spki(&key))}),
        )
        .await;
    assert!(refused.is_err(), "{refused:?}");
}

#[tokio::test]
async fn revoking_a_browser_closes_its_websocket_at_once() {
    let host = TestHost::started();
    let address = host.tls_address().await;
    let origin = own_origin(&address);
    let browser = pair_browser(&host, &address).await;
    let mut ws = websocket(&address, Some(&origin)).await.unwrap();
    let nonce = challenge(&mut ws).await;
    let ok = initialize(&mut ws, signed_auth(&browser, &origin, &nonce)).await;
    assert!(ok["result"].is_object(), "{ok}");

    let mut owner = host.connect().await;
    let _: Value = within(
        10,
        owner.call("devices.revoke", json!({"deviceId": browser.device_id})),
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let code = closed(&mut ws).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "closed after {:?} ({code:?})",
        started.elapsed()
    );

    let mut again = websocket(&address, Some(&origin)).await.unwrap();
    let nonce = challenge(&mut again).await;
    let refused = initialize(&mut again, signed_auth(&browser, &origin, &nonce)).await;
    assert_eq!(refused["error"]["code"], -32001, "{refused}");
}

// ---- The owner's certificate for browsers ----

/// Writes a self-signed certificate for `names` with a fresh key, as an
/// owner's CA or ACME client would leave it; returns its fingerprint.
fn write_owner_certificate(data: &std::path::Path, names: &[&str]) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let cert = params.self_signed(&key).unwrap();
    // The key first: a host that looks in between sees a mismatch and keeps the old pair.
    std::fs::write(data.join("owner.key"), key.serialize_pem()).unwrap();
    std::fs::write(data.join("owner.crt"), cert.pem()).unwrap();
    openwork_host::transport::tls::fingerprint(cert.der())
}

/// The fingerprint of the certificate the host presents to a client offering `alpn`.
async fn presented(address: &str, alpn: &[&[u8]]) -> String {
    let verifier = openwork_host::transport::tls::PinnedCert::new(None);
    drop(tls_with(address, alpn, verifier.clone()).await);
    verifier.seen().expect("a certificate")
}

const OWNER_CERT_CONFIG: &str = "[network]\ncertificate = \"owner.crt\"\nkey = \"owner.key\"\n";

#[tokio::test]
async fn browsers_get_the_owner_s_certificate_and_native_clients_keep_the_pinned_one_across_renewals()
 {
    let mut host = TestHost::new(OWNER_CERT_CONFIG);
    let first = write_owner_certificate(&host.data, &["desk.test"]);
    host.start();
    let address = host.tls_address().await;
    let port = port(&address);
    let device = host.pair_device("laptop", None).await;

    assert_eq!(presented(&address, &[b"h2", b"http/1.1"]).await, first);
    assert_eq!(presented(&address, &[]).await, first);
    let native = presented(&address, &[openwork_host::transport::tls::ALPN]).await;
    assert_eq!(
        native, device.fingerprint,
        "native clients see the identity certificate"
    );
    assert_ne!(native, first);
    // The certificate's names are the host's own.
    let named = http(
        &address,
        &[b"http/1.1"],
        &get("/", &format!("desk.test:{port}"), ""),
    )
    .await;
    assert_eq!(named.status, 200);

    // Renewed with a new key (and a new name): browsers get it without a restart…
    let renewed = write_owner_certificate(&host.data, &["desk2.test"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while presented(&address, &[b"http/1.1"]).await != renewed {
        assert!(
            std::time::Instant::now() < deadline,
            "the renewed certificate was not loaded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let named = http(
        &address,
        &[b"http/1.1"],
        &get("/", &format!("desk2.test:{port}"), ""),
    )
    .await;
    assert_eq!(named.status, 200);
    let old_name = http(
        &address,
        &[b"http/1.1"],
        &get("/", &format!("desk.test:{port}"), ""),
    )
    .await;
    assert_eq!(old_name.status, 421);
    // …and the paired native device, which pinned the identity, still connects.
    let mut session = device_session(&device).await;
    let pong: Value = within(10, session.call("$/ping", json!({}))).await.unwrap();
    assert_eq!(pong, json!({}));

    // A broken renewal keeps the certificate in use.
    std::fs::write(host.data.join("owner.crt"), "not a certificate").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(presented(&address, &[b"http/1.1"]).await, renewed);
}

#[tokio::test]
async fn an_impostor_with_the_owner_s_certificate_is_refused_by_native_clients() {
    let mut host = TestHost::new(OWNER_CERT_CONFIG);
    write_owner_certificate(&host.data, &["desk.test"]);
    host.start();
    let device = host.pair_device("laptop", None).await;

    // Another host holding the very same browser certificate and key.
    let mut impostor = TestHost::new(OWNER_CERT_CONFIG);
    for file in ["owner.crt", "owner.key"] {
        std::fs::copy(host.data.join(file), impostor.data.join(file)).unwrap();
    }
    impostor.start();
    let mut redirected = device.clone();
    redirected.address = impostor.tls_address().await;
    let refused = within(10, openwork_host::client::open_session(&redirected, "test")).await;
    assert!(refused.is_err(), "a native client refuses the impostor");
    let mut session = device_session(&device).await;
    let pong: Value = within(10, session.call("$/ping", json!({}))).await.unwrap();
    assert_eq!(pong, json!({}));
}

#[test]
fn a_browser_certificate_that_does_not_load_stops_the_host_naming_the_file() {
    let host = TestHost::new(OWNER_CERT_CONFIG);
    std::fs::write(host.data.join("owner.crt"), "not a certificate").unwrap();
    std::fs::write(host.data.join("owner.key"), "not a key").unwrap();
    let out = output_within(host.serve_command(), 30);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("owner.crt") && said.contains("[network] certificate"),
        "{said}"
    );
}
