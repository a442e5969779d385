//! A fake language model on loopback that speaks the OpenAI chat-completions
//! streaming protocol, so the real OpenCode can run a whole turn offline:
//! it answers a prompt with a `bash` tool call, and the tool's result with a
//! final text. A request without tools is OpenCode asking for a title.

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct FakeModel {
    pub port: u16,
    command: Arc<Mutex<String>>,
    requests: Arc<AtomicUsize>,
}

impl FakeModel {
    /// Starts the model; `command` is what its tool call runs.
    pub async fn start(command: &str) -> FakeModel {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let command = Arc::new(Mutex::new(command.to_owned()));
        let requests = Arc::new(AtomicUsize::new(0));
        let (c, r) = (Arc::clone(&command), Arc::clone(&requests));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (c, r) = (Arc::clone(&c), Arc::clone(&r));
                tokio::spawn(async move {
                    let _ = serve(stream, c, r).await;
                });
            }
        });
        FakeModel {
            port,
            command,
            requests,
        }
    }

    /// What the next tool call runs.
    pub fn set_command(&self, command: &str) {
        *self.command.lock().unwrap() = command.to_owned();
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// An opencode.json that uses this model and asks before bash runs.
    pub fn opencode_json(&self) -> String {
        json!({
            "$schema": "https://opencode.ai/config.json",
            "provider": {"fake": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Fake",
                "options": {"baseURL": format!("http://127.0.0.1:{}/v1", self.port)},
                "models": {"fake-model": {"name": "Fake model"}}
            }},
            "model": "fake/fake-model",
            "small_model": "fake/fake-model",
            "permission": {"bash": "ask"}
        })
        .to_string()
    }
}

fn chunk(delta: Value, finish: Option<&str>) -> String {
    let body = json!({
        "id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": "fake-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
    });
    format!("data: {body}\n\n")
}

async fn serve(
    mut stream: tokio::net::TcpStream,
    command: Arc<Mutex<String>>,
    requests: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let header_end = loop {
        let n = stream.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 1 << 20 {
            return Ok(());
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < header_end + length {
        let n = stream.read(&mut tmp).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    if !head.starts_with("post") || !head.contains("/chat/completions") {
        stream
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await?;
        return Ok(());
    }
    requests.fetch_add(1, Ordering::Relaxed);
    let body: Value = serde_json::from_slice(&buf[header_end..]).unwrap_or(Value::Null);
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let mut out = String::new();
    if body.get("tools").is_none() {
        out.push_str(&chunk(
            json!({"role": "assistant", "content": "A fake title"}),
            None,
        ));
        out.push_str(&chunk(json!({}), Some("stop")));
    } else if messages.last().is_some_and(|m| m["role"] == "tool") {
        out.push_str(&chunk(
            json!({"role": "assistant", "content": "Done: "}),
            None,
        ));
        out.push_str(&chunk(json!({"content": "the command ran."}), None));
        out.push_str(&chunk(json!({}), Some("stop")));
    } else {
        let arguments =
            json!({"command": command.lock().unwrap().clone(), "description": "Run the command"})
                .to_string();
        out.push_str(&chunk(
            json!({"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                "function": {"name": "bash", "arguments": ""}}]}),
            None,
        ));
        out.push_str(&chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": arguments}}]}),
            None,
        ));
        out.push_str(&chunk(json!({}), Some("tool_calls")));
    }
    out.push_str("data: [DONE]\n\n");
    stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n")
        .await?;
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}
