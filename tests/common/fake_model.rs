//! A fake language model on loopback that speaks the OpenAI chat-completions
//! streaming protocol, so the real OpenCode can run a whole turn offline:
//! it answers a prompt with a `bash` tool call (or, for `TASK:AGENT:COMMAND`,
//! a `task` call that starts sub-agent AGENT, whose own prompt gets the
//! `bash` call of COMMAND), and the tool's result with some reasoning and a
//! final text. A request without tools is OpenCode asking for a title. It can
//! also answer the next request with an HTTP error. With the command
//! `FROM_PROMPT`, the tool call runs what the prompt holds between `CMD[` and
//! `]CMD` (so that many prompts at once each run their own command).

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The command that tells the model to take each command from its prompt.
pub const FROM_PROMPT: &str = "FROM_PROMPT";

pub struct FakeModel {
    pub port: u16,
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    command: Mutex<String>,
    requests: AtomicUsize,
    /// The `model` of each request, in order.
    models: Mutex<Vec<String>>,
    /// An HTTP status and message for the next request with tools.
    fail_next: Mutex<Option<(u16, String)>>,
}

impl FakeModel {
    /// Starts the model; `command` is what its tool call runs.
    pub async fn start(command: &str) -> FakeModel {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(State::default());
        *state.command.lock().unwrap() = command.to_owned();
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let _ = serve(stream, state).await;
                });
            }
        });
        FakeModel { port, state }
    }

    /// What the next tool call runs.
    pub fn set_command(&self, command: &str) {
        *self.state.command.lock().unwrap() = command.to_owned();
    }

    /// The next request with tools gets this HTTP error instead of an answer.
    pub fn fail_next(&self, status: u16, message: &str) {
        *self.state.fail_next.lock().unwrap() = Some((status, message.to_owned()));
    }

    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// The model each request named, in order.
    pub fn models(&self) -> Vec<String> {
        self.state.models.lock().unwrap().clone()
    }

    /// An opencode.json that uses this model and asks before bash runs.
    pub fn opencode_json(&self) -> String {
        self.opencode_json_with(json!({"bash": "ask"}), json!({}))
    }

    /// An opencode.json that uses this model, with these `permission` and
    /// `agent` settings.
    pub fn opencode_json_with(&self, permission: Value, agent: Value) -> String {
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
            "permission": permission,
            "agent": agent
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

async fn serve(mut stream: tokio::net::TcpStream, state: Arc<State>) -> std::io::Result<()> {
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
    state.requests.fetch_add(1, Ordering::Relaxed);
    let body: Value = serde_json::from_slice(&buf[header_end..]).unwrap_or(Value::Null);
    if let Some(model) = body["model"].as_str() {
        state.models.lock().unwrap().push(model.to_owned());
    }
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let failure = if body.get("tools").is_some() {
        state.fail_next.lock().unwrap().take()
    } else {
        None
    };
    if let Some((status, message)) = failure {
        let error = json!({"error": {"message": message, "type": "fake_error"}}).to_string();
        let head = format!(
            "HTTP/1.1 {status} Fake\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            error.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(error.as_bytes()).await?;
        return stream.shutdown().await;
    }
    let tools: Vec<&str> = body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    let mut out = String::new();
    if body.get("tools").is_none() {
        out.push_str(&chunk(
            json!({"role": "assistant", "content": "A fake title"}),
            None,
        ));
        out.push_str(&chunk(json!({}), Some("stop")));
    } else if messages.last().is_some_and(|m| m["role"] == "tool") {
        out.push_str(&chunk(
            json!({"role": "assistant", "reasoning_content": "The tool answered."}),
            None,
        ));
        out.push_str(&chunk(json!({"content": "Done: "}), None));
        out.push_str(&chunk(json!({"content": "the command ran."}), None));
        out.push_str(&chunk(json!({}), Some("stop")));
    } else {
        let mut command = state.command.lock().unwrap().clone();
        if command == FROM_PROMPT {
            // The last `CMD[...]CMD` in the request: the newest user prompt.
            let text = String::from_utf8_lossy(&buf[header_end..]);
            command = text
                .rfind("CMD[")
                .and_then(|i| {
                    let rest = &text[i + 4..];
                    rest.find("]CMD").map(|j| rest[..j].to_owned())
                })
                .unwrap_or_else(|| "echo no command in the prompt".to_owned());
        }
        let (tool, arguments) = match command
            .strip_prefix("TASK:")
            .and_then(|rest| rest.split_once(':'))
        {
            Some((agent, _)) if tools.contains(&"task") => (
                "task",
                json!({"description": "Run it in a sub-agent", "prompt": "run the command", "subagent_type": agent}),
            ),
            Some((_, inner)) => (
                "bash",
                json!({"command": inner, "description": "Run the command"}),
            ),
            None => (
                "bash",
                json!({"command": command, "description": "Run the command"}),
            ),
        };
        let arguments = arguments.to_string();
        // Call ids differ per turn, as a real model's do.
        let call = format!("call_{}", messages.len());
        out.push_str(&chunk(
            json!({"role": "assistant", "tool_calls": [{"index": 0, "id": call, "type": "function",
                "function": {"name": tool, "arguments": ""}}]}),
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
