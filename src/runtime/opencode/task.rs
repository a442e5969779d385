//! An OpenCode prompt as a task: it creates or continues a session, sends
//! the prompt, turns the session's events into `event` log chunks and task
//! statuses, and brings OpenCode's permission asks to people (after the
//! host's own policy). The task ends when the session goes idle.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{ApiClient, OpenCode, Routed};
use crate::clock;
use crate::permissions::{AskOutcome, OpencodeCheck, Permissions};
use crate::protocol::{Decision, LogStream, TaskStatus};
use crate::tasks::TaskLive;
use crate::tasks::records::StatusChange;
use crate::tasks::runner::Outcome;
use crate::tasks::sink::Sink;

/// What to send to OpenCode.
#[derive(Debug, Clone)]
pub struct PromptJob {
    pub prompt: String,
    pub session_id: Option<String>,
    /// `provider/model`.
    pub model: Option<String>,
    pub agent: Option<String>,
    pub title: Option<String>,
    /// The project directory OpenCode works in.
    pub directory: PathBuf,
    pub timeout: Option<Duration>,
}

/// What the prompt task works with.
pub struct PromptContext<'a> {
    pub opencode: &'a Arc<OpenCode>,
    pub permissions: &'a Arc<Permissions>,
    pub live: &'a Arc<TaskLive>,
    pub shutdown: &'a CancellationToken,
}

type AskFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = (String, Option<AskOutcome>)> + Send>>;

fn failed(message: impl Into<String>) -> Outcome {
    Outcome::ended(TaskStatus::Failed, message)
}

async fn event(sink: &mut Sink, value: Value) {
    let _ = sink
        .chunk(LogStream::Event, Bytes::from(value.to_string()))
        .await;
}

/// Runs a prompt to the end of the session's turn.
pub async fn run(job: PromptJob, sink: &mut Sink, ctx: PromptContext<'_>) -> Outcome {
    let ready = tokio::select! {
        ready = ctx.opencode.ready(Duration::from_secs(90)) => ready,
        _ = ctx.live.cancel.cancelled() => return Outcome::ended(TaskStatus::Cancelled, "cancelled before OpenCode was ready"),
        _ = ctx.shutdown.cancelled() => return Outcome::ended(TaskStatus::Interrupted, "the host shut down before OpenCode was ready"),
    };
    let client = match ready {
        Ok((client, _)) => client,
        Err(e) => return failed(format!("OpenCode is not available: {e}; {}", e.action())),
    };
    let directory = vec![("directory".to_owned(), job.directory.display().to_string())];
    let session_id = match open_session(&client, &job, &directory).await {
        Ok(id) => id,
        Err(message) => return failed(message),
    };
    // Follow the session before prompting it, so no event is missed.
    let mut events = ctx.opencode.route(&session_id);
    sink.status(
        TaskStatus::Running,
        StatusChange {
            started_at: Some(clock::now_ms()),
            session_id: Some(session_id.clone()),
            ..StatusChange::default()
        },
    )
    .await;
    event(
        sink,
        json!({"kind": "session", "sessionId": session_id, "directory": job.directory}),
    )
    .await;
    let mut body = json!({"parts": [{"type": "text", "text": job.prompt}]});
    if let Some((provider, model)) = job.model.as_deref().and_then(|m| m.split_once('/')) {
        body["model"] = json!({"providerID": provider, "modelID": model});
    }
    if let Some(agent) = &job.agent {
        body["agent"] = json!(agent);
    }
    if let Err(e) = client
        .post(
            &format!("/session/{session_id}/prompt_async"),
            &directory,
            &body,
        )
        .await
    {
        return failed(format!("OpenCode did not take the prompt: {e}"));
    }

    let mut turn = Turn::default();
    let mut asks: FuturesUnordered<AskFuture> = FuturesUnordered::new();
    let mut ask_tokens: HashMap<String, CancellationToken> = HashMap::new();
    let never = tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    let deadline = job.timeout.map(|t| tokio::time::Instant::now() + t);
    loop {
        tokio::select! {
            routed = events.rx.recv() => match routed {
                Some(Routed::Event(ev)) => {
                    if let Some(ask) = turn.on_event(&ev, sink, &ctx, &client, &directory, &mut ask_tokens).await {
                        if asks.is_empty() {
                            // Committed first, so the request follows the status in every feed.
                            let _ = sink.status(TaskStatus::WaitingPermission, StatusChange::default()).await.await;
                        }
                        asks.push(ask);
                    }
                }
                Some(Routed::Resync) => {
                    let status = client.get("/session/status", &directory).await.unwrap_or(Value::Null);
                    let busy = status.get(&session_id).is_some_and(|s| s["type"] != "idle");
                    if turn.busy_seen && !busy {
                        turn.idle = true;
                    }
                }
                Some(Routed::Lost(reason)) => {
                    return failed(format!("OpenCode stopped while working on this task ({reason}); the host is restarting it"));
                }
                None => return failed("OpenCode's event stream ended while working on this task"),
            },
            Some((oc_request, outcome)) = asks.next(), if !asks.is_empty() => {
                ask_tokens.remove(&oc_request);
                if let Some(outcome) = outcome {
                    let reply = match &outcome {
                        AskOutcome::Allowed { decision: Decision::Always, .. } => "always",
                        AskOutcome::Allowed { .. } => "once",
                        _ => "reject",
                    };
                    let _ = client
                        .post(&format!("/permission/{oc_request}/reply"), &directory, &json!({"reply": reply}))
                        .await;
                    event(sink, json!({"kind": "permission", "requestId": oc_request, "reply": reply})).await;
                }
                if asks.is_empty() {
                    let _ = sink.status(TaskStatus::Running, StatusChange::default()).await.await;
                }
            },
            _ = ctx.live.cancel.cancelled() => {
                stop(&client, &session_id, &directory, &ask_tokens).await;
                return Outcome::ended(TaskStatus::Cancelled, "cancelled on request; the OpenCode session was aborted");
            },
            _ = ctx.shutdown.cancelled() => {
                stop(&client, &session_id, &directory, &ask_tokens).await;
                return Outcome::ended(TaskStatus::Interrupted, "the host shut down while OpenCode worked on this task");
            },
            _ = tokio::time::sleep_until(deadline.unwrap_or(never)), if deadline.is_some() => {
                stop(&client, &session_id, &directory, &ask_tokens).await;
                return failed(format!("timed out after {} s; the OpenCode session was aborted", job.timeout.unwrap_or_default().as_secs()));
            },
        }
        if turn.idle && asks.is_empty() {
            let mut change = StatusChange {
                finished_at: Some(clock::now_ms()),
                ..StatusChange::default()
            };
            return match turn.error.take() {
                Some(error) => {
                    change.error = Some(format!("OpenCode reported an error: {error}"));
                    Outcome {
                        status: TaskStatus::Failed,
                        change,
                    }
                }
                None => Outcome {
                    status: TaskStatus::Succeeded,
                    change,
                },
            };
        }
    }
}

/// Aborts the session and withdraws what still waits for people; OpenCode
/// keeps an ask listed until it is answered, so the asks are rejected.
async fn stop(
    client: &ApiClient,
    session_id: &str,
    directory: &[(String, String)],
    asks: &HashMap<String, CancellationToken>,
) {
    for (oc_request, token) in asks {
        token.cancel();
        let _ = client
            .post(
                &format!("/permission/{oc_request}/reply"),
                directory,
                &json!({"reply": "reject"}),
            )
            .await;
    }
    let _ = client
        .post(
            &format!("/session/{session_id}/abort"),
            directory,
            &json!({}),
        )
        .await;
}

async fn open_session(
    client: &ApiClient,
    job: &PromptJob,
    directory: &[(String, String)],
) -> Result<String, String> {
    if let Some(id) = &job.session_id {
        client
            .get(&format!("/session/{id}"), directory)
            .await
            .map_err(|e| format!("cannot continue OpenCode session `{id}`: {e}"))?;
        let status = client
            .get("/session/status", directory)
            .await
            .unwrap_or(Value::Null);
        if status.get(id).is_some_and(|s| s["type"] == "busy") {
            return Err(format!(
                "OpenCode session `{id}` is busy with another prompt; wait for it, or cancel that task"
            ));
        }
        return Ok(id.clone());
    }
    let title = job.title.clone().unwrap_or_else(|| {
        job.prompt
            .lines()
            .next()
            .unwrap_or("prompt")
            .chars()
            .take(80)
            .collect()
    });
    let mut body = json!({"title": title});
    if let Some(agent) = &job.agent {
        body["agent"] = json!(agent);
    }
    let session = client
        .post("/session", directory, &body)
        .await
        .map_err(|e| format!("cannot create an OpenCode session: {e}"))?;
    session["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "OpenCode created a session without an id".to_owned())
}

/// What a turn has seen so far.
#[derive(Default)]
struct Turn {
    busy_seen: bool,
    idle: bool,
    error: Option<String>,
    tools: HashMap<String, String>,
    streamed_parts: HashSet<String>,
}

impl Turn {
    /// Handles one event; returns a permission ask to wait on, if any.
    async fn on_event(
        &mut self,
        ev: &Value,
        sink: &mut Sink,
        ctx: &PromptContext<'_>,
        client: &ApiClient,
        directory: &[(String, String)],
        ask_tokens: &mut HashMap<String, CancellationToken>,
    ) -> Option<AskFuture> {
        let props = &ev["properties"];
        match ev["type"].as_str().unwrap_or("") {
            "session.status" => match props.pointer("/status/type").and_then(Value::as_str) {
                Some("idle") if self.busy_seen => self.idle = true,
                Some("busy") | Some("retry") => self.busy_seen = true,
                _ => {}
            },
            "session.idle" if self.busy_seen => self.idle = true,
            "session.error" => {
                let message = props
                    .pointer("/error/data/message")
                    .or_else(|| props.pointer("/error/message"))
                    .or_else(|| props.pointer("/error/name"))
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error")
                    .to_owned();
                event(sink, json!({"kind": "error", "message": message})).await;
                self.error = Some(message);
            }
            "message.part.delta" if props["field"] == "text" => {
                if let Some(part) = props["partID"].as_str() {
                    self.streamed_parts.insert(part.to_owned());
                }
                event(
                    sink,
                    json!({"kind": "text", "messageId": props["messageID"], "partId": props["partID"], "delta": props["delta"]}),
                )
                .await;
            }
            "message.part.updated" => self.on_part(&props["part"], sink).await,
            "permission.asked" => {
                return self
                    .on_ask(props, sink, ctx, client, directory, ask_tokens)
                    .await;
            }
            "permission.replied" => {
                // Answered in OpenCode itself (another client): stop asking here.
                if let Some(token) = props["requestID"]
                    .as_str()
                    .and_then(|id| ask_tokens.get(id))
                {
                    token.cancel();
                }
            }
            _ => {}
        }
        None
    }

    async fn on_part(&mut self, part: &Value, sink: &mut Sink) {
        match part["type"].as_str().unwrap_or("") {
            "tool" => {
                let call = part["callID"].as_str().unwrap_or("").to_owned();
                let status = part
                    .pointer("/state/status")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                if self.tools.get(&call) == Some(&status) {
                    return;
                }
                self.tools.insert(call.clone(), status.clone());
                let state = &part["state"];
                let mut out =
                    json!({"kind": "tool", "tool": part["tool"], "callId": call, "status": status});
                match status.as_str() {
                    "pending" | "running" => out["input"] = state["input"].clone(),
                    "completed" => {
                        out["title"] = state["title"].clone();
                        out["output"] = state["output"].clone();
                    }
                    "error" => out["error"] = state["error"].clone(),
                    _ => {}
                }
                event(sink, out).await;
            }
            kind @ ("text" | "reasoning") => {
                let id = part["id"].as_str().unwrap_or("");
                let ended = part.pointer("/time/end").is_some();
                let text = part["text"].as_str().unwrap_or("");
                // Text already streamed as deltas is not sent twice.
                if ended
                    && !text.is_empty()
                    && !self.streamed_parts.contains(id)
                    && part["synthetic"] != true
                {
                    event(sink, json!({"kind": kind, "messageId": part["messageID"], "partId": id, "text": text})).await;
                }
            }
            _ => {}
        }
    }

    async fn on_ask(
        &mut self,
        props: &Value,
        sink: &mut Sink,
        ctx: &PromptContext<'_>,
        client: &ApiClient,
        directory: &[(String, String)],
        ask_tokens: &mut HashMap<String, CancellationToken>,
    ) -> Option<AskFuture> {
        let oc_request = props["id"].as_str()?.to_owned();
        let permission = props["permission"]
            .as_str()
            .unwrap_or("permission")
            .to_owned();
        let patterns: Vec<String> = props["patterns"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let always: Vec<String> = props["always"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let command = props
            .pointer("/metadata/command")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let dir = directory
            .first()
            .map(|(_, d)| PathBuf::from(d))
            .unwrap_or_default();
        let check = ctx
            .permissions
            .check_opencode(
                &ctx.live.task_id,
                &permission,
                &patterns,
                command.as_deref(),
                &dir,
            )
            .await;
        let quick = match check {
            Ok(OpencodeCheck::Deny(reason)) => {
                Some(("reject", format!("denied by this host's policy: {reason}")))
            }
            Ok(OpencodeCheck::Allow(reason)) => Some(("once", reason)),
            Ok(OpencodeCheck::Ask) => None,
            Err(e) => Some((
                "reject",
                format!("the host could not check its policy ({e})"),
            )),
        };
        if let Some((reply, reason)) = quick {
            let mut body = json!({"reply": reply});
            if reply == "reject" {
                body["message"] = json!(reason);
            }
            let _ = client
                .post(&format!("/permission/{oc_request}/reply"), directory, &body)
                .await;
            event(sink, json!({"kind": "permission", "requestId": oc_request, "reply": reply, "reason": reason})).await;
            return None;
        }
        let ask = crate::permissions::opencode_ask(
            &ctx.live.task_id,
            &permission,
            &patterns,
            &always,
            command.as_deref(),
            props.get("metadata"),
            &dir,
        );
        let token = ctx.live.cancel.child_token();
        ask_tokens.insert(oc_request.clone(), token.clone());
        let (permissions, live, shutdown) = (
            Arc::clone(ctx.permissions),
            Arc::clone(ctx.live),
            ctx.shutdown.clone(),
        );
        Some(Box::pin(async move {
            let outcome = permissions.ask(&live, ask, &token, &shutdown).await.ok();
            // Withdrawn because OpenCode got its answer elsewhere: nothing to send.
            let outcome = match outcome {
                Some(AskOutcome::Withdrawn)
                    if !live.cancel.is_cancelled() && !shutdown.is_cancelled() =>
                {
                    None
                }
                other => other,
            };
            (oc_request, outcome)
        }))
    }
}
