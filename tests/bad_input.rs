//! Bad input from clients: oversized, malformed and truncated frames, invalid
//! UTF-8, ids echoed to the byte, clients that vanish or stop reading.

mod common;

use common::*;
use serde_json::{Value, json};

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn an_oversized_frame_gets_a_clear_error_and_the_connection_carries_on() {
    let host = {
        let mut h = TestHost::new("[limits]\nmax_frame_bytes = 4096\n");
        h.start();
        h
    };
    let mut client = host.connect().await;
    let big = json!({"jsonrpc": "2.0", "id": 1, "method": "task.run", "params": {"command": "x".repeat(10_000)}});
    within(10, client.send(&big)).await.unwrap();
    let reply = within(10, client.next_message()).await.unwrap();
    assert_eq!(reply["id"], Value::Null);
    assert_eq!(reply["error"]["code"], -32600);
    assert_eq!(reply["error"]["data"]["limit"], 4096);
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("over the host's limit of 4096 bytes"),
        "{message}"
    );
    assert!(
        reply["error"]["data"]["action"]
            .as_str()
            .unwrap()
            .contains("max_frame_bytes")
    );
    let pong: Value = within(10, client.call("$/ping", json!({}))).await.unwrap();
    assert_eq!(pong, json!({}));
}

#[test]
fn an_oversized_line_on_stdio_is_refused_in_both_framings() {
    let host = TestHost::new("[limits]\nmax_frame_bytes = 4096\n");
    let padding = "y".repeat(8000);
    let ndjson = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"$/ping\",\"params\":{{\"pad\":\"{padding}\"}}}}\n{{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"$/ping\"}}\n"
    );
    let body = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"$/ping\",\"params\":{{\"pad\":\"{padding}\"}}}}"
    );
    let ping = r#"{"jsonrpc":"2.0","id":2,"method":"$/ping"}"#;
    let lsp = format!(
        "Content-Length: {}\r\n\r\n{body}Content-Length: {}\r\n\r\n{ping}",
        body.len(),
        ping.len()
    );
    for input in [ndjson, lsp] {
        let child = output_with_input(host.stdio(), input.as_bytes(), 30);
        assert!(child.status.success());
        let out = String::from_utf8_lossy(&child.stdout);
        assert!(out.contains("over the host's limit of 4096 bytes"), "{out}");
        assert!(
            out.contains(r#""id":2,"result":{}"#),
            "the next message is still answered: {out}"
        );
    }
}

#[tokio::test]
async fn the_stdio_bridge_answers_framing_errors_exactly_as_the_daemon_does() {
    let mut host = TestHost::new("[limits]\nmax_frame_bytes = 4096\n");
    host.start();
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"$/ping","params":{{"pad":"{}"}}}}"#,
        "y".repeat(8000)
    );
    let malformed = b"Content-Lenght: 5\r\n\r\n{}";
    // The daemon's own answers, over its socket.
    let mut client = host.connect().await;
    within(10, client.send_frame(big.as_bytes())).await.unwrap();
    let too_large = within(10, client.next_message()).await.unwrap();
    let mut bad = host.connect().await;
    within(10, bad.send_raw(malformed)).await.unwrap();
    let bad_header = within(10, bad.next_message()).await.unwrap();
    for error in [&too_large, &bad_header] {
        assert!(
            error["error"]["data"]["action"].is_string(),
            "the user is told what to do: {error}"
        );
    }

    // The bridge answers for the daemon, which never sees these frames.
    let mut input = format!("Content-Length: {}\r\n\r\n{big}", big.len()).into_bytes();
    input.extend_from_slice(malformed);
    let out = output_with_input(host.stdio(), &input, 30);
    assert!(out.status.success());
    let frames = lsp_frames(&out.stdout);
    assert_eq!(frames, vec![too_large, bad_header]);
}

#[test]
fn invalid_utf8_on_stdio_is_a_parse_error_in_both_framings_with_or_without_a_daemon() {
    let mut host = TestHost::new("");
    let bad = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\xfe\"}";
    let ping = br#"{"jsonrpc":"2.0","id":2,"method":"$/ping"}"#;
    let mut ndjson = bad.to_vec();
    ndjson.push(b'\n');
    ndjson.extend_from_slice(ping);
    ndjson.push(b'\n');
    let mut lsp = format!("Content-Length: {}\r\n\r\n", bad.len()).into_bytes();
    lsp.extend_from_slice(bad);
    lsp.extend_from_slice(format!("Content-Length: {}\r\n\r\n", ping.len()).as_bytes());
    lsp.extend_from_slice(ping);
    for mode in ["in-process", "bridged"] {
        if mode == "bridged" {
            host.start();
        }
        for (framing, input) in [("ndjson", &ndjson), ("lsp", &lsp)] {
            let out = output_with_input(host.stdio(), input, 30);
            assert!(out.status.success(), "{mode} {framing}");
            let replies = if framing == "lsp" {
                lsp_frames(&out.stdout)
            } else {
                json_lines(&out.stdout)
            };
            assert_eq!(replies.len(), 2, "{mode} {framing}: {replies:?}");
            assert_eq!(replies[0]["id"], Value::Null);
            assert_eq!(replies[0]["error"]["code"], -32700, "{mode} {framing}");
            assert!(
                replies[0]["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("UTF-8"),
                "{mode} {framing}: {}",
                replies[0]
            );
            assert!(replies[0]["error"]["data"]["action"].is_string());
            assert_eq!(
                replies[1],
                json!({"jsonrpc": "2.0", "id": 2, "result": {}}),
                "{mode} {framing}: the connection carries on"
            );
        }
    }
}

#[tokio::test]
async fn a_huge_declared_length_is_never_allocated() {
    let host = TestHost::started();
    let mut client = host.connect().await;
    // 1 TiB declared; the host must skip, not allocate, and the other clients never notice.
    within(
        10,
        client.send_raw(b"Content-Length: 1099511627776\r\n\r\n{\"jsonrpc\":\"2.0\""),
    )
    .await
    .unwrap();
    let mut other = host.connect().await;
    let pong: Value = within(10, other.call("$/ping", json!({}))).await.unwrap();
    assert_eq!(pong, json!({}));
    within(10, client.close_write()).await.unwrap();
    let end = within(10, client.next_message()).await;
    assert!(
        end.is_err(),
        "the host closes a connection cut in the middle of a frame"
    );
    assert!(
        peak_rss_kib(host.pid()) < 200 * 1024,
        "the host never grew towards the declared size"
    );
    let pong: Value = within(10, other.call("$/ping", json!({}))).await.unwrap();
    assert_eq!(pong, json!({}));
}

#[tokio::test]
async fn invalid_utf8_in_a_frame_is_a_parse_error_and_the_connection_carries_on() {
    let host = TestHost::started();
    let mut client = host.connect().await;
    within(
        10,
        client.send_frame(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\xfe\"}"),
    )
    .await
    .unwrap();
    let reply = within(10, client.next_message()).await.unwrap();
    assert_eq!(reply["error"]["code"], -32700);
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("UTF-8")
    );
    let pong: Value = within(10, client.call("$/ping", json!({}))).await.unwrap();
    assert_eq!(pong, json!({}));
}

#[tokio::test]
async fn ids_are_echoed_byte_for_byte() {
    let host = TestHost::started();
    let mut client = host.connect().await;
    for id in [
        "1e3",
        "-0.5",
        "18446744073709551616",
        r#""caf\u00e9""#,
        "null",
        "7",
    ] {
        let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"$/ping"}}"#);
        within(10, client.send_frame(body.as_bytes()))
            .await
            .unwrap();
        let reply = within(10, client.read_frame()).await.unwrap();
        let reply = String::from_utf8(reply).unwrap();
        assert_eq!(
            reply,
            format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#)
        );
    }
}

#[tokio::test]
async fn a_malformed_header_closes_only_that_connection() {
    let host = TestHost::started();
    let mut bad = host.connect().await;
    let mut good = host.connect().await;
    within(10, bad.send_raw(b"Content-Lenght: 5\r\n\r\n{}"))
        .await
        .unwrap();
    let reply = within(10, bad.next_message()).await.unwrap();
    assert_eq!(reply["error"]["code"], -32700);
    assert!(
        within(10, bad.next_message()).await.is_err(),
        "then the host closes it"
    );
    let pong: Value = within(10, good.call("$/ping", json!({}))).await.unwrap();
    assert_eq!(pong, json!({}));
}

#[tokio::test]
async fn a_client_that_vanishes_mid_stream_loses_nothing() {
    let host = TestHost::started();
    let mut client = host.connect().await;
    let task = run(
        &mut client,
        json!({"command": "for i in $(seq 1 60); do echo line $i; sleep 0.01; done"}),
    )
    .await;
    // Read a few chunks, then drop the connection without a goodbye.
    within(10, async {
        let mut chunks = 0;
        while chunks < 3 {
            let m = client.next_notification().await.unwrap();
            if m["method"] == "log.chunk" {
                chunks += 1;
            }
        }
    })
    .await;
    drop(client);

    let mut again = host.connect().await;
    let record = within(20, async {
        loop {
            let record: Value = again
                .call("task.get", json!({"taskId": task}))
                .await
                .unwrap();
            if record["status"] != "running" && record["status"] != "queued" {
                return record;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(
        record["status"], "succeeded",
        "the task kept running: {record}"
    );
    let logs: Value = within(
        10,
        again.call("task.logs", json!({"taskId": task, "limit": 1000})),
    )
    .await
    .unwrap();
    assert_eq!(logs["done"], true);
    let text: String = logs["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["data"].as_str().unwrap())
        .collect();
    let expected: String = (1..=60).map(|i| format!("line {i}\n")).collect();
    assert_eq!(text, expected);
}

#[tokio::test]
async fn replies_do_not_wait_behind_a_flood_of_log_chunks() {
    let host = TestHost::started();
    let mut client = host.connect().await;
    let task = run(
        &mut client,
        json!({"command": "head -c 50000000 /dev/zero | tr '\\0' 'x'"}),
    )
    .await;
    // Let notifications pile up unread, then ask something.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    within(
        10,
        client.send(&json!({"jsonrpc": "2.0", "id": "urgent", "method": "$/ping"})),
    )
    .await
    .unwrap();
    let chunks_before_reply = within(60, async {
        let mut chunks = 0usize;
        loop {
            let body = client.read_frame().await.unwrap();
            let m: Value = serde_json::from_slice(&body).unwrap();
            if m["id"] == "urgent" {
                return chunks;
            }
            if m["method"] == "log.chunk" {
                chunks += 1;
            }
        }
    })
    .await;
    // What was already in the socket and the small notification queue may
    // come first; the ~760 chunks still to come must not.
    assert!(
        chunks_before_reply < 64,
        "the reply waited behind {chunks_before_reply} chunks"
    );
    let followed = follow(&mut client, &task, 120).await;
    assert_eq!(
        followed.last().status,
        openwork_host::protocol::TaskStatus::Succeeded
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_costs_no_memory_and_then_gets_everything() {
    let host = TestHost::started();
    let mut client = host.connect().await;
    let size = 96 * 1024 * 1024u64;
    let task = run(
        &mut client,
        json!({"command": format!("yes 'slow client line 0123456789' | head -c {size}")}),
    )
    .await;
    // Do not read until the task has finished writing everything.
    let mut probe = host.connect().await;
    within(120, async {
        loop {
            let record: Value = probe
                .call("task.get", json!({"taskId": task}))
                .await
                .unwrap();
            if record["status"] == "succeeded" {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    let rss = peak_rss_kib(host.pid());
    assert!(
        rss < 150 * 1024,
        "the host buffered for the slow client: peak RSS {rss} KiB"
    );
    let followed = follow(&mut client, &task, 120).await;
    assert_contiguous(&followed.chunks, 1);
    assert_eq!(followed.output().len() as u64, size);
    assert!(
        followed
            .output()
            .starts_with(b"slow client line 0123456789\nslow")
    );
}

/// A value of the wrong type for a param described by `schema` (resolved
/// against the OpenRPC document's components).
fn wrong_value(schema: &Value, doc: &Value) -> Value {
    let schema = match schema.get("allOf").and_then(|a| a.get(0)) {
        Some(first) => first,
        None => schema,
    };
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference.rsplit('/').next().unwrap();
        return wrong_value(&doc["components"]["schemas"][name], doc);
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("string") => json!(12345),
        Some("integer" | "number" | "boolean" | "array") => json!("not that"),
        Some("object") => json!(42),
        // An enum of strings, or a union such as a request id: an object fits neither.
        _ if schema.get("enum").is_some() || schema.get("oneOf").is_some() => json!(42),
        _ => json!({"not": "that"}),
    }
}

#[tokio::test]
async fn every_method_refuses_a_wrong_typed_param_naming_it_and_saying_what_to_do() {
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema/openrpc.json"))
            .unwrap(),
    )
    .unwrap();
    let methods = doc["methods"].as_array().unwrap();
    let mut served: Vec<&str> = openwork_host::rpc::methods::table().names();
    served.sort_unstable();
    let mut documented: Vec<&str> = methods
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    documented.sort_unstable();
    assert_eq!(
        documented, served,
        "schema/openrpc.json lists every method the host serves"
    );

    let host = TestHost::started();
    let mut client = host.connect().await;
    let mut tried = 0;
    for method in methods {
        let name = method["name"].as_str().unwrap();
        let params = method["params"].as_array().unwrap();
        // Each param wrong on its own; a method without params gets one it does not know.
        let cases: Vec<(String, Value)> = if params.is_empty() {
            vec![("unexpected".to_owned(), json!(1))]
        } else {
            params
                .iter()
                .map(|p| {
                    let member = p["name"].as_str().unwrap().to_owned();
                    (member, wrong_value(&p["schema"], &doc))
                })
                .collect()
        };
        for (member, value) in cases {
            let params = json!({ member.clone(): value });
            let request =
                json!({"jsonrpc": "2.0", "id": "wrong", "method": name, "params": params});
            within(10, client.send(&request)).await.unwrap();
            let reply = within(10, async {
                loop {
                    let m = client.next_message().await.unwrap();
                    if m["id"] == "wrong" {
                        return m;
                    }
                }
            })
            .await;
            let error = &reply["error"];
            assert_eq!(error["code"], -32602, "{name} {params}: {reply}");
            assert!(
                error["message"].as_str().unwrap().contains(&member),
                "{name} {params}: the message names `{member}`: {reply}"
            );
            assert!(
                error["data"]["action"]
                    .as_str()
                    .is_some_and(|a| !a.is_empty()),
                "{name} {params}: {reply}"
            );
            tried += 1;
        }
    }
    assert!(tried > methods.len(), "{tried} wrong params tried");
    let pong: Value = within(10, client.call("$/ping", json!({}))).await.unwrap();
    assert_eq!(
        pong,
        json!({}),
        "exit and shutdown with wrong params were not done"
    );
}
