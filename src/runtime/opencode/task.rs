//! An OpenCode prompt as a task: it creates or continues a session, sends
//! the prompt, turns the session's events (and its sub-agents') into
//! `event` log chunks and task statuses, and brings OpenCode's permission
//! asks to the host's policy and then to people. The task ends when the
//! session goes idle.
//!
//! The session is given rules that make every command and every sub-agent
//! ask (see `rules`), so the host's policy judges each command whatever
//! OpenCode's configuration says. The host answers OpenCode `once` even
//! when a person answers `always`: it remembers the rule itself, so that its
//! deny rules still apply to every later command.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::rules::{self, Rule};
use super::{ApiClient, OpenCode, Routed, SessionEvents};
use crate::clock;
use crate::execution::{Outcome, Sink, StatusChange, TaskLive};
use crate::permissions::{
    AskOutcome, OpencodeAsk, OpencodeCheck, OpencodeVerdict, Permissions, opencode_ask,
};
use crate::protocol::{Decision, LogStream, TaskStatus};
use crate::store::StoreError;

/// What to send to OpenCode.
pub(crate) struct PromptJob {
    pub prompt: String,
    pub session_id: Option<String>,
    /// `provider/model`.
    pub model: Option<String>,
    pub agent: Option<String>,
    pub title: Option<String>,
    /// The project directory OpenCode works in.
    pub directory: PathBuf,
    pub timeout: Option<Duration>,
    /// The session `session_id` names, claimed when the task was created.
    pub claim: Option<SessionEvents>,
}

/// What the prompt task works with.
pub(crate) struct PromptContext<'a> {
    pub opencode: &'a Arc<OpenCode>,
    pub permissions: &'a Arc<Permissions>,
    pub live: &'a Arc<TaskLive>,
    pub shutdown: &'a CancellationToken,
}

type AskResult = (String, Result<AskOutcome, StoreError>);
type AskFuture = std::pin::Pin<Box<dyn std::future::Future<Output = AskResult> + Send>>;

/// How long cleaning up after a task may take: answering OpenCode, and the
/// withdrawn requests recording their end.
const CLEANUP: Duration = Duration::from_secs(10);

/// Who answered an ask in OpenCode itself, for people following the task.
const ANSWERED_IN_OPENCODE: &str = "another OpenCode client";

fn failed(message: impl Into<String>) -> Outcome {
    Outcome::ended(TaskStatus::Failed, message)
}

async fn event(sink: &mut Sink, value: Value) {
    let _ = sink
        .chunk(LogStream::Event, Bytes::from(value.to_string()))
        .await;
}

/// Why the loop over the session's events stopped.
enum Ending {
    /// The session's turn is over.
    Idle,
    Cancelled,
    Shutdown,
    TimedOut(Duration),
    /// OpenCode stopped.
    Lost(String),
    /// Something the task cannot go on from.
    Failed(String),
}

/// What handling one event leads to.
enum Step {
    Continue,
    /// A person is asked: wait for the answer.
    Ask(AskFuture),
    End(Ending),
}

/// Runs a prompt to the end of the session's turn.
pub(crate) async fn run(mut job: PromptJob, sink: &mut Sink, ctx: PromptContext<'_>) -> Outcome {
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
    let opened = match open_session(&client, &mut job, ctx.opencode, &directory).await {
        Ok(opened) => opened,
        Err(message) => return failed(message),
    };
    let Opened {
        id: session_id,
        mut events,
        judge,
    } = opened;
    // Anything that stopped an earlier OpenCode is no concern of this task.
    events.begin();
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

    let mut turn = Turn {
        main: session_id.clone(),
        directory: directory.clone(),
        cwd: job.directory.clone(),
        judge,
        busy_seen: false,
        idle: false,
        error: None,
        tools: HashMap::new(),
        part_kinds: HashMap::new(),
        streamed_parts: HashSet::new(),
        seen_asks: HashSet::new(),
        open: HashMap::new(),
        elsewhere: HashSet::new(),
    };
    let mut asks: FuturesUnordered<AskFuture> = FuturesUnordered::new();
    let never = tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
    let deadline = job.timeout.map(|t| tokio::time::Instant::now() + t);
    let ending = loop {
        let steps = tokio::select! {
            routed = events.next() => match routed {
                Routed::Event(ev) => vec![turn.on_event(&ev, sink, &ctx, &client).await],
                Routed::Resync => turn.resync(sink, &ctx, &client, &events).await,
                Routed::Lost(reason) => vec![Step::End(Ending::Lost(reason))],
            },
            Some((oc_request, outcome)) = asks.next(), if !asks.is_empty() => {
                turn.answered(oc_request, outcome, sink, &client).await;
                if asks.is_empty() {
                    let _ = sink.status(TaskStatus::Running, StatusChange::default()).await.await;
                }
                Vec::new()
            },
            _ = ctx.live.cancel.cancelled() => vec![Step::End(Ending::Cancelled)],
            _ = ctx.shutdown.cancelled() => vec![Step::End(Ending::Shutdown)],
            _ = tokio::time::sleep_until(deadline.unwrap_or(never)), if deadline.is_some() => {
                vec![Step::End(Ending::TimedOut(job.timeout.unwrap_or_default()))]
            },
        };
        let mut ended = None;
        for step in steps {
            match step {
                Step::Continue => {}
                Step::Ask(ask) => {
                    if asks.is_empty() {
                        // Committed first, so the request follows the status in every feed.
                        let _ = sink
                            .status(TaskStatus::WaitingPermission, StatusChange::default())
                            .await
                            .await;
                    }
                    asks.push(ask);
                }
                Step::End(ending) => ended = ended.or(Some(ending)),
            }
        }
        if let Some(ending) = ended {
            break ending;
        }
        if turn.idle {
            break Ending::Idle;
        }
    };
    turn.finish(ending, asks, &ctx, &client).await
}

/// A session ready for the prompt, and what judging its asks needs.
struct Opened {
    id: String,
    events: SessionEvents,
    judge: Judge,
}

/// What OpenCode's own configuration says, for asks the host's rules made.
struct Judge {
    /// The rules in force for the task's session without the host's: the
    /// agent's (its configuration) and the session's own.
    own: Vec<Rule>,
    /// Each agent's rules, for sub-agents.
    agents: HashMap<String, Vec<Rule>>,
    /// Tools OpenCode allows in every sub-agent (`experimental.primary_tools`).
    primary_tools: Vec<String>,
}

impl Judge {
    /// What OpenCode would do with an ask, had the host not made it ask.
    fn verdict(
        &self,
        permission: &str,
        patterns: &[String],
        metadata: &Value,
        in_task_session: bool,
    ) -> OpencodeVerdict {
        let from_rules = |action| match action {
            rules::Action::Allow => OpencodeVerdict::Allow,
            rules::Action::Ask => OpencodeVerdict::Ask,
            rules::Action::Deny => OpencodeVerdict::Deny {
                rule: format!("opencode:{permission}"),
                reason: format!("OpenCode's own configuration denies `{permission}` here"),
            },
        };
        match permission {
            "task" => {
                let agent = metadata["subagent_type"]
                    .as_str()
                    .or(patterns.first().map(String::as_str))
                    .unwrap_or("?");
                let watched = self
                    .agents
                    .get(agent)
                    .is_some_and(|r| rules::every_command_asks(r))
                    && !self.primary_tools.iter().any(|t| t == "bash");
                if !watched {
                    return OpencodeVerdict::Deny {
                        rule: "opencode:subagent".to_owned(),
                        reason: format!(
                            "the `{agent}` sub-agent would run commands without asking, out of sight of this host's policy; to use it in host tasks, make it ask before commands in opencode.json (\"agent\": {{\"{agent}\": {{\"permission\": {{\"bash\": \"ask\"}}}}}})"
                        ),
                    };
                }
                if in_task_session {
                    from_rules(rules::verdict(&self.own, permission, patterns))
                } else {
                    OpencodeVerdict::Ask
                }
            }
            "bash" if in_task_session => {
                from_rules(rules::verdict(&self.own, permission, patterns))
            }
            // OpenCode asked by its own configuration: the host's rules
            // concern commands and sub-agents only, and a sub-agent runs
            // only when its every command asks.
            _ => OpencodeVerdict::Ask,
        }
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Reads what OpenCode's configuration says for the task's agent.
async fn read_judge(
    client: &ApiClient,
    agent: Option<&str>,
    directory: &[(String, String)],
) -> Judge {
    // Without these, no rule is known and OpenCode's default (ask) is assumed.
    let agents: HashMap<String, Vec<Rule>> = client
        .get("/agent", directory)
        .await
        .ok()
        .and_then(|a| a.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|a| {
            Some((
                a["name"].as_str()?.to_owned(),
                rules::parse(&a["permission"]),
            ))
        })
        .collect();
    let config = client
        .get("/config", directory)
        .await
        .unwrap_or(Value::Null);
    let agent = agent
        .or(config["default_agent"].as_str())
        .unwrap_or("build");
    Judge {
        own: agents.get(agent).cloned().unwrap_or_default(),
        agents,
        primary_tools: strings(&config["experimental"]["primary_tools"]),
    }
}

async fn open_session(
    client: &ApiClient,
    job: &mut PromptJob,
    opencode: &Arc<OpenCode>,
    directory: &[(String, String)],
) -> Result<Opened, String> {
    let mut judge = read_judge(client, job.agent.as_deref(), directory).await;
    if let Some(id) = job.session_id.clone() {
        let events = match job.claim.take() {
            Some(events) => events,
            None => opencode.route(&id).map_err(|e| e.to_string())?,
        };
        let session = client
            .get(&format!("/session/{id}"), directory)
            .await
            .map_err(|e| format!("cannot continue OpenCode session `{id}`: {e}"))?;
        let status = client
            .get("/session/status", directory)
            .await
            .unwrap_or(Value::Null);
        if status
            .get(&id)
            .is_some_and(|s| s["type"] == "busy" || s["type"] == "retry")
        {
            return Err(format!(
                "OpenCode session `{id}` is busy with a prompt from elsewhere; wait for it, or abort it"
            ));
        }
        let prior = rules::parse(&session["permission"]);
        judge.own.extend(rules::without_host_rules(&prior));
        let add = rules::host_rules(&judge.own);
        // OpenCode appends the rules it is given, so they are given once.
        if !prior.ends_with(&add) {
            client
                .send(
                    reqwest::Method::PATCH,
                    &format!("/session/{id}"),
                    directory,
                    Some(&json!({"permission": add})),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|e| {
                    format!("cannot give OpenCode session `{id}` this host's permission rules: {e}")
                })?;
        }
        return Ok(Opened { id, events, judge });
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
    let mut body = json!({"title": title, "permission": rules::host_rules(&judge.own)});
    if let Some(agent) = &job.agent {
        body["agent"] = json!(agent);
    }
    let session = client
        .post("/session", directory, &body)
        .await
        .map_err(|e| format!("cannot create an OpenCode session: {e}"))?;
    let id = session["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "OpenCode created a session without an id".to_owned())?;
    let events = opencode.route(&id).map_err(|e| e.to_string())?;
    Ok(Opened { id, events, judge })
}

/// A short call while cleaning up: OpenCode may be going away too.
async fn quick_post(client: &ApiClient, path: &str, directory: &[(String, String)], body: Value) {
    let _ = client
        .send(
            reqwest::Method::POST,
            path,
            directory,
            Some(&body),
            Duration::from_secs(5),
        )
        .await;
}

/// What a turn has seen so far.
struct Turn {
    /// The task's own session (others are its sub-agents').
    main: String,
    directory: Vec<(String, String)>,
    cwd: PathBuf,
    judge: Judge,
    busy_seen: bool,
    idle: bool,
    error: Option<String>,
    /// The last status of each tool call, by session and call id.
    tools: HashMap<String, String>,
    /// `text` or `reasoning`, by part id, so that deltas are told apart.
    part_kinds: HashMap<String, &'static str>,
    streamed_parts: HashSet<String>,
    /// OpenCode asks handled already (an ask may be seen again on a resync).
    seen_asks: HashSet<String>,
    /// OpenCode asks waiting for a person: OpenCode's id → the host's request id.
    open: HashMap<String, String>,
    /// Asks answered in OpenCode itself while a person was being asked.
    elsewhere: HashSet<String>,
}

fn session_of(ev: &Value) -> Option<&str> {
    let props = &ev["properties"];
    props["sessionID"]
        .as_str()
        .or_else(|| props.pointer("/info/sessionID").and_then(Value::as_str))
        .or_else(|| props.pointer("/part/sessionID").and_then(Value::as_str))
        .or_else(|| props.pointer("/info/id").and_then(Value::as_str))
}

impl Turn {
    /// Marks an event of a sub-agent's session with that session.
    fn tag(&self, session: &str, mut value: Value) -> Value {
        if session != self.main {
            value["sessionId"] = json!(session);
        }
        value
    }

    async fn on_event(
        &mut self,
        ev: &Value,
        sink: &mut Sink,
        ctx: &PromptContext<'_>,
        client: &ApiClient,
    ) -> Step {
        let props = &ev["properties"];
        let session = session_of(ev).unwrap_or_default().to_owned();
        let main = session == self.main;
        match ev["type"].as_str().unwrap_or("") {
            "session.status" => match props.pointer("/status/type").and_then(Value::as_str) {
                Some("idle") if main && (self.busy_seen || self.error.is_some()) => {
                    self.idle = true
                }
                Some("busy") if main => self.busy_seen = true,
                Some("retry") => {
                    self.busy_seen |= main;
                    let status = &props["status"];
                    let retry = json!({"kind": "retry", "attempt": status["attempt"], "message": status["message"], "next": status["next"]});
                    event(sink, self.tag(&session, retry)).await;
                }
                _ => {}
            },
            "session.idle" if main && (self.busy_seen || self.error.is_some()) => self.idle = true,
            "session.error" => {
                let message = props
                    .pointer("/error/data/message")
                    .or_else(|| props.pointer("/error/message"))
                    .or_else(|| props.pointer("/error/name"))
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error")
                    .to_owned();
                event(
                    sink,
                    self.tag(&session, json!({"kind": "error", "message": message})),
                )
                .await;
                if main {
                    self.error = Some(message);
                    // An error may end the turn without OpenCode ever saying busy or idle.
                    if !self.busy_now(client).await {
                        self.idle = true;
                    }
                }
            }
            "session.created" if !main => {
                let info = &props["info"];
                event(
                    sink,
                    json!({"kind": "subagent", "sessionId": session, "parentId": info["parentID"], "title": info["title"]}),
                )
                .await;
            }
            "message.part.delta" if props["field"] == "text" => {
                let part = props["partID"].as_str().unwrap_or_default().to_owned();
                let kind = self.part_kinds.get(&part).copied().unwrap_or("text");
                let delta = json!({"kind": kind, "messageId": props["messageID"], "partId": part, "delta": props["delta"]});
                self.streamed_parts.insert(part);
                event(sink, self.tag(&session, delta)).await;
            }
            "message.part.updated" => self.on_part(&props["part"], &session, sink).await,
            "permission.asked" => return self.on_ask(props, &session, sink, ctx, client).await,
            "permission.replied" => {
                let oc_request = props["requestID"].as_str().unwrap_or_default();
                let reply = props["reply"].as_str().unwrap_or("reject");
                if let Some(request_id) = self.open.get(oc_request) {
                    // Answered in OpenCode itself: the people asked here are told so.
                    let decision = match reply {
                        "once" => Decision::Once,
                        "always" => Decision::Always,
                        _ => Decision::Reject,
                    };
                    ctx.permissions
                        .settle_elsewhere(request_id, decision, ANSWERED_IN_OPENCODE);
                    self.elsewhere.insert(oc_request.to_owned());
                    event(
                        sink,
                        json!({"kind": "permission", "requestId": oc_request, "reply": reply, "by": ANSWERED_IN_OPENCODE}),
                    )
                    .await;
                }
            }
            _ => {}
        }
        Step::Continue
    }

    /// Whether OpenCode says the task's session is working.
    async fn busy_now(&self, client: &ApiClient) -> bool {
        let status = client
            .get("/session/status", &self.directory)
            .await
            .unwrap_or(Value::Null);
        status
            .get(&self.main)
            .is_some_and(|s| s["type"] == "busy" || s["type"] == "retry")
    }

    /// After missed events: where the session is, and the asks waiting.
    async fn resync(
        &mut self,
        sink: &mut Sink,
        ctx: &PromptContext<'_>,
        client: &ApiClient,
        events: &SessionEvents,
    ) -> Vec<Step> {
        tracing::warn!(
            session = self.main,
            "events of an OpenCode session may have been missed; looking at its state"
        );
        if self.busy_now(client).await {
            self.busy_seen = true;
        } else if self.busy_seen || self.error.is_some() || self.turn_answered(client).await {
            self.idle = true;
        }
        let sessions = events.sessions();
        let pending = client
            .get("/permission", &self.directory)
            .await
            .ok()
            .and_then(|p| p.as_array().cloned())
            .unwrap_or_default();
        let mut steps = Vec::new();
        for ask in pending {
            let Some(session) = ask["sessionID"].as_str().map(str::to_owned) else {
                continue;
            };
            if sessions.contains(&session)
                && ask["id"]
                    .as_str()
                    .is_some_and(|id| !self.seen_asks.contains(id))
            {
                steps.push(self.on_ask(&ask, &session, sink, ctx, client).await);
            }
        }
        steps
    }

    /// Whether the session's last message is a finished answer: the turn
    /// ended while its events were missed.
    async fn turn_answered(&self, client: &ApiClient) -> bool {
        let mut query = self.directory.clone();
        query.push(("limit".to_owned(), "1".to_owned()));
        let messages = client
            .get(&format!("/session/{}/message", self.main), &query)
            .await
            .unwrap_or(Value::Null);
        messages.as_array().and_then(|m| m.last()).is_some_and(|m| {
            m.pointer("/info/role") == Some(&json!("assistant"))
                && m.pointer("/info/time/completed").is_some()
        })
    }

    async fn on_part(&mut self, part: &Value, session: &str, sink: &mut Sink) {
        match part["type"].as_str().unwrap_or("") {
            "tool" => {
                let call = part["callID"].as_str().unwrap_or("").to_owned();
                let status = part
                    .pointer("/state/status")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                // Call ids are the model's, unique within a session only.
                let key = format!("{session}/{call}");
                if self.tools.get(&key) == Some(&status) {
                    return;
                }
                self.tools.insert(key, status.clone());
                let state = &part["state"];
                let mut out =
                    json!({"kind": "tool", "tool": part["tool"], "callId": call, "status": status});
                match status.as_str() {
                    "pending" | "running" => out["input"] = state["input"].clone(),
                    "completed" => {
                        out["input"] = state["input"].clone();
                        out["title"] = state["title"].clone();
                        out["output"] = state["output"].clone();
                    }
                    "error" => {
                        out["input"] = state["input"].clone();
                        out["error"] = state["error"].clone();
                    }
                    _ => {}
                }
                event(sink, self.tag(session, out)).await;
            }
            kind @ ("text" | "reasoning") => {
                let id = part["id"].as_str().unwrap_or("");
                self.part_kinds.insert(
                    id.to_owned(),
                    if kind == "text" { "text" } else { "reasoning" },
                );
                let ended = part.pointer("/time/end").is_some();
                let text = part["text"].as_str().unwrap_or("");
                // Text already streamed as deltas is not sent twice.
                if ended
                    && !text.is_empty()
                    && !self.streamed_parts.contains(id)
                    && part["synthetic"] != true
                {
                    let whole = json!({"kind": kind, "messageId": part["messageID"], "partId": id, "text": text});
                    event(sink, self.tag(session, whole)).await;
                }
            }
            _ => {}
        }
    }

    /// An OpenCode permission ask: the host's policy and OpenCode's own
    /// configuration first, then a person.
    async fn on_ask(
        &mut self,
        props: &Value,
        session: &str,
        sink: &mut Sink,
        ctx: &PromptContext<'_>,
        client: &ApiClient,
    ) -> Step {
        let Some(oc_request) = props["id"].as_str().map(str::to_owned) else {
            // OpenCode waits for an answer that cannot be given without an id.
            return Step::End(Ending::Failed(
                "OpenCode asked for permission without a request id, so the host cannot answer it; the session was aborted".to_owned(),
            ));
        };
        if !self.seen_asks.insert(oc_request.clone()) {
            return Step::Continue;
        }
        let permission = props["permission"]
            .as_str()
            .unwrap_or("permission")
            .to_owned();
        let patterns = strings(&props["patterns"]);
        let always = strings(&props["always"]);
        let metadata = props.get("metadata").cloned().unwrap_or(Value::Null);
        let command = match metadata["command"].as_str() {
            Some(command) => Some(command.to_owned()),
            // Every command is judged, even one OpenCode describes only by patterns.
            None if permission == "bash" && !patterns.is_empty() => Some(patterns.join("; ")),
            None => None,
        };
        let verdict = self
            .judge
            .verdict(&permission, &patterns, &metadata, session == self.main);
        let check = ctx
            .permissions
            .check_opencode(
                &ctx.live.task_id,
                &permission,
                &patterns,
                command.as_deref(),
                &self.cwd,
                verdict,
            )
            .await;
        let quick = match check {
            Ok(OpencodeCheck::Deny(reason)) => {
                Ok(("reject", format!("denied by this host's policy: {reason}")))
            }
            Ok(OpencodeCheck::Allow(reason)) => Ok(("once", reason)),
            Ok(OpencodeCheck::Ask { findings, rules }) => Err((findings, rules)),
            Err(e) => Ok((
                "reject",
                format!("the host could not check its policy ({e})"),
            )),
        };
        let (findings, rules) = match quick {
            Ok((reply, reason)) => {
                let message = (reply == "reject").then_some(reason.as_str());
                self.reply_to_opencode(client, &oc_request, reply, message)
                    .await;
                let answered = json!({"kind": "permission", "requestId": oc_request, "permission": permission, "reply": reply, "reason": reason});
                event(sink, self.tag(session, answered)).await;
                return Step::Continue;
            }
            Err(asking) => asking,
        };
        let ask = opencode_ask(
            &OpencodeAsk {
                task_id: &ctx.live.task_id,
                permission: &permission,
                patterns: &patterns,
                always: &always,
                command: command.as_deref(),
                metadata: Some(&metadata),
                cwd: &self.cwd,
            },
            &findings,
            rules,
        );
        self.open.insert(oc_request.clone(), ask.request_id.clone());
        let (permissions, live, shutdown) = (
            Arc::clone(ctx.permissions),
            Arc::clone(ctx.live),
            ctx.shutdown.clone(),
        );
        Step::Ask(Box::pin(async move {
            let outcome = permissions
                .ask(live.as_ref(), ask, &live.cancel, &shutdown)
                .await;
            (oc_request, outcome)
        }))
    }

    /// Answers one of OpenCode's asks (`once` or `reject`), with the message
    /// OpenCode shows when there is one. Best effort: an ask OpenCode no
    /// longer lists needs no answer.
    async fn reply_to_opencode(
        &self,
        client: &ApiClient,
        oc_request: &str,
        reply: &str,
        message: Option<&str>,
    ) {
        let mut body = json!({"reply": reply});
        if let Some(message) = message {
            body["message"] = json!(message);
        }
        let _ = client
            .post(
                &format!("/permission/{oc_request}/reply"),
                &self.directory,
                &body,
            )
            .await;
    }

    /// A person's answer (or none) goes to OpenCode, unless OpenCode was
    /// answered elsewhere meanwhile.
    async fn answered(
        &mut self,
        oc_request: String,
        outcome: Result<AskOutcome, StoreError>,
        sink: &mut Sink,
        client: &ApiClient,
    ) {
        self.open.remove(&oc_request);
        if self.elsewhere.remove(&oc_request) {
            return;
        }
        let (reply, message, decision) = match &outcome {
            // `always` is remembered by the host, which keeps judging each
            // command; OpenCode is told `once` so that it keeps asking.
            Ok(AskOutcome::Allowed { decision, .. }) => ("once", None, decision.as_str()),
            Ok(AskOutcome::Rejected { by }) => {
                ("reject", Some(format!("rejected by {by}")), "reject")
            }
            Ok(AskOutcome::Expired { after }) => (
                "reject",
                Some(format!("no one answered within {} s", after.as_secs())),
                "reject",
            ),
            Ok(AskOutcome::Withdrawn) => ("reject", None, "reject"),
            Err(e) => (
                "reject",
                Some(format!("the host could not record the request ({e})")),
                "reject",
            ),
        };
        self.reply_to_opencode(client, &oc_request, reply, message.as_deref())
            .await;
        let mut answered = json!({"kind": "permission", "requestId": oc_request, "reply": reply, "decision": decision});
        if let Some(message) = message {
            answered["reason"] = json!(message);
        }
        event(sink, answered).await;
    }

    /// Ends the task: the requests still waiting for people are withdrawn
    /// with the reason (so their followers and the audit learn how they
    /// ended), OpenCode's asks are rejected and the session aborted where
    /// that still matters.
    async fn finish(
        self,
        ending: Ending,
        mut asks: FuturesUnordered<AskFuture>,
        ctx: &PromptContext<'_>,
        client: &ApiClient,
    ) -> Outcome {
        let lost = matches!(ending, Ending::Lost(_));
        let (why, outcome, abort) = match ending {
            Ending::Idle => {
                let mut change = StatusChange {
                    finished_at: Some(clock::now_ms()),
                    ..StatusChange::default()
                };
                let status = match &self.error {
                    Some(error) => {
                        change.error = Some(format!("OpenCode reported an error: {error}"));
                        TaskStatus::Failed
                    }
                    None => TaskStatus::Succeeded,
                };
                (
                    "the OpenCode session stopping".to_owned(),
                    Outcome { status, change },
                    false,
                )
            }
            Ending::Cancelled => (
                "the task being cancelled".to_owned(),
                Outcome::ended(
                    TaskStatus::Cancelled,
                    "cancelled on request; the OpenCode session was aborted",
                ),
                true,
            ),
            Ending::Shutdown => (
                "the host shutting down".to_owned(),
                Outcome::ended(
                    TaskStatus::Interrupted,
                    "the host shut down while OpenCode worked on this task",
                ),
                true,
            ),
            Ending::TimedOut(after) => (
                "the task timing out".to_owned(),
                failed(format!(
                    "timed out after {} s; the OpenCode session was aborted",
                    after.as_secs()
                )),
                true,
            ),
            Ending::Lost(reason) => (
                "OpenCode stopping".to_owned(),
                failed(format!(
                    "OpenCode stopped while working on this task ({reason}); the host is restarting it"
                )),
                false,
            ),
            Ending::Failed(message) => ("the task failing".to_owned(), failed(message), true),
        };
        // A stopped OpenCode has nothing left to answer.
        let reachable = !lost;
        let cleanup = async {
            for (oc_request, request_id) in &self.open {
                ctx.permissions.withdraw(request_id, &why);
                // OpenCode keeps an ask listed until it is answered.
                if reachable {
                    quick_post(
                        client,
                        &format!("/permission/{oc_request}/reply"),
                        &self.directory,
                        json!({"reply": "reject", "message": format!("withdrawn: {why}")}),
                    )
                    .await;
                }
            }
            if abort {
                quick_post(
                    client,
                    &format!("/session/{}/abort", self.main),
                    &self.directory,
                    json!({}),
                )
                .await;
            }
            // The withdrawn requests record their end and tell the followers.
            while asks.next().await.is_some() {}
        };
        if tokio::time::timeout(CLEANUP, cleanup).await.is_err() {
            tracing::warn!(
                task = ctx.live.task_id,
                "cleaning up after an OpenCode task took too long"
            );
        }
        outcome
    }
}
