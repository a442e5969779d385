//! One phone: a process of its own (so that it can be stopped with SIGSTOP)
//! running a mix of tasks through the client library's `HostSession`,
//! checking every byte and status each task ends with, and reporting what a
//! person would have seen, one JSON line per task, on stdout.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use openwork_host::client::{HostSession, KnownHost, Notice, ReconnectPolicy, SessionError};
use openwork_host::protocol::{LogStream, TaskRunParams, TaskStatus, TaskUpdate};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::Instant;

/// Milliseconds on the monotonic clock, the same in every process of the machine.
pub fn mono_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 * 1000.0 + ts.tv_nsec as f64 / 1e6
}

/// The client's reconnect policy in the soak: the library's defaults with
/// time compressed (liveness 15 s -> 3 s, backoff cap 10 s -> 1 s).
pub fn policy() -> ReconnectPolicy {
    ReconnectPolicy {
        first_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
        give_up_after: Duration::from_secs(300),
        connect_timeout: Duration::from_secs(5),
        liveness: Duration::from_secs(3),
        find_on_lan: None,
    }
}

/// The kinds of work a phone asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A short command, ending with some exit code.
    Short,
    /// A build printing a line every 20 ms or so, for seconds.
    Noisy,
    /// Hundreds of KiB at once.
    Bulk,
    /// A command the policy asks about; the phone says yes.
    Permission,
    /// A prompt to the real OpenCode (with the fake model), whose `bash`
    /// tool call asks for permission first.
    Opencode,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Short => "short",
            Kind::Noisy => "noisy",
            Kind::Bulk => "bulk",
            Kind::Permission => "permission",
            Kind::Opencode => "opencode",
        }
    }
}

/// A task and what it must end with.
struct Spec {
    kind: Kind,
    command: String,
    /// For OpenCode: the prompt (`command` is what its tool call runs).
    prompt: Option<String>,
    stdout: String,
    stderr: String,
    status: TaskStatus,
    exit_code: Option<i32>,
}

/// What each phone asks for: a mix of short commands, noisy builds, bulk
/// output, permission asks and (when OpenCode runs) prompts.
fn spec(w: u32, k: u64, rng: &mut StdRng, opencode: bool) -> Spec {
    let roll = rng.random_range(0..100);
    let id = format!("w{w} t{k}");
    if opencode && rng.random_range(0..100) < 6 {
        let echo = format!("w{w}-t{k}-opencode");
        return Spec {
            kind: Kind::Opencode,
            command: format!("echo {echo}"),
            prompt: Some(format!("Please run CMD[echo {echo}]CMD for me")),
            stdout: format!("{echo}\n"),
            stderr: String::new(),
            status: TaskStatus::Succeeded,
            exit_code: None,
        };
    }
    if roll < 55 {
        let code = [0, 0, 0, 1, 3][rng.random_range(0..5)];
        Spec {
            prompt: None,
            kind: Kind::Short,
            command: format!("printf '{id} hello\\n'; printf '{id} oops\\n' >&2; exit {code}"),
            stdout: format!("{id} hello\n"),
            stderr: format!("{id} oops\n"),
            status: if code == 0 {
                TaskStatus::Succeeded
            } else {
                TaskStatus::Failed
            },
            exit_code: Some(code),
        }
    } else if roll < 75 {
        let lines = rng.random_range(50..300u32);
        let stdout: String = (0..lines)
            .map(|i| {
                format!(
                    "{id} line {i}: compiling module_{i}.rs with a long and noisy command line\n"
                )
            })
            .collect();
        Spec {
            prompt: None,
            kind: Kind::Noisy,
            command: format!(
                "i=0; while [ $i -lt {lines} ]; do echo \"{id} line $i: compiling module_$i.rs with a long and noisy command line\"; i=$((i+1)); if [ $((i % 5)) = 0 ]; then sleep 0.1; fi; done; echo '{id} built' >&2"
            ),
            stdout,
            stderr: format!("{id} built\n"),
            status: TaskStatus::Succeeded,
            exit_code: Some(0),
        }
    } else if roll < 85 {
        let count = rng.random_range(5_000..40_000u32);
        let stdout: String = (1..=count).map(|i| format!("{id} {i}\n")).collect();
        Spec {
            prompt: None,
            kind: Kind::Bulk,
            command: format!("seq 1 {count} | sed 's/^/{id} /'"),
            stdout,
            stderr: String::new(),
            status: TaskStatus::Succeeded,
            exit_code: Some(0),
        }
    } else {
        Spec {
            prompt: None,
            kind: Kind::Permission,
            command: format!("touch p{w}_{k} && chmod 600 p{w}_{k} && echo '{id} allowed'"),
            stdout: format!("{id} allowed\n"),
            stderr: String::new(),
            status: TaskStatus::Succeeded,
            exit_code: Some(0),
        }
    }
}

/// A task under way and what has arrived of it.
struct Active {
    k: u64,
    spec: Spec,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// OpenCode's events, one per chunk.
    events: Vec<Value>,
    next_seq: u64,
    gap: bool,
    duplicate: bool,
    streaming: bool,
}

/// How a task ended, as the user saw it.
fn verdict(active: &Active, last: &TaskUpdate) -> (&'static str, String) {
    let stdout = String::from_utf8_lossy(&active.stdout);
    let stderr = String::from_utf8_lossy(&active.stderr);
    if active.duplicate {
        return ("duplicated_output", "a chunk arrived twice".into());
    }
    if active.gap {
        return ("lost_output", "a seq was skipped".into());
    }
    if active.spec.kind == Kind::Opencode && last.status != TaskStatus::Interrupted {
        return opencode_verdict(active, last);
    }
    if last.status == TaskStatus::Interrupted {
        // Only a host restart interrupts: what arrived must be a clean prefix.
        if active.spec.stdout.starts_with(&*stdout) && active.spec.stderr.starts_with(&*stderr) {
            return ("host_restart", String::new());
        }
        return (
            classify_mismatch(&active.spec.stdout, &stdout),
            "interrupted, and the output is not a prefix of the expected".into(),
        );
    }
    if stdout != active.spec.stdout {
        return (
            classify_mismatch(&active.spec.stdout, &stdout),
            format!(
                "stdout: {} bytes, {} expected",
                stdout.len(),
                active.spec.stdout.len()
            ),
        );
    }
    if stderr != active.spec.stderr {
        return (
            classify_mismatch(&active.spec.stderr, &stderr),
            format!("stderr {stderr:?}, {:?} expected", active.spec.stderr),
        );
    }
    if last.status != active.spec.status || last.exit_code != active.spec.exit_code {
        return (
            "failed",
            format!(
                "{:?} exit {:?} ({:?}), {:?} exit {:?} expected",
                last.status, last.exit_code, last.error, active.spec.status, active.spec.exit_code
            ),
        );
    }
    ("ok", String::new())
}

/// An OpenCode turn: the tool ran this task's own command and printed its
/// line, the model's final text arrived whole, and the task succeeded.
fn opencode_verdict(active: &Active, last: &TaskUpdate) -> (&'static str, String) {
    let tool = active
        .events
        .iter()
        .filter(|e| e["kind"] == "tool" && e["status"] == "completed")
        .filter_map(|e| e["output"].as_str())
        .collect::<Vec<_>>();
    let text: String = active
        .events
        .iter()
        .filter(|e| e["kind"] == "text" && e.get("sessionId").is_none())
        .filter_map(|e| e["delta"].as_str().or(e["text"].as_str()))
        .collect();
    if last.status != TaskStatus::Succeeded {
        return (
            "failed",
            format!(
                "{:?} ({:?}); tool output {tool:?}, text {text:?}",
                last.status, last.error
            ),
        );
    }
    if tool != [active.spec.stdout.as_str()] {
        let outcome = if tool.len() > 1 {
            "duplicated_output"
        } else {
            "lost_output"
        };
        return (
            outcome,
            format!("tool output {tool:?}, {:?} expected", active.spec.stdout),
        );
    }
    if text != "Done: the command ran." {
        return (
            classify_mismatch("Done: the command ran.", &text),
            format!("text {text:?}"),
        );
    }
    ("ok", String::new())
}

fn classify_mismatch(want: &str, got: &str) -> &'static str {
    if got.len() > want.len() {
        "duplicated_output"
    } else {
        "lost_output"
    }
}

/// A task to start (again, for a prompt OpenCode was not ready for).
struct Retry {
    k: u64,
    spec: Spec,
    at: Instant,
    tries: u32,
}

/// A person asks OpenCode again after "not ready" (it restarts with the
/// host), once a second for up to three minutes.
const OPENCODE_TRIES: u32 = 180;

/// Starts a task: under way in `active`, asked again later in `waiting`, or
/// reported as refused or given up.
async fn start(
    session: &mut HostSession,
    w: u32,
    retry: Retry,
    active: &mut HashMap<String, Active>,
    waiting: &mut Vec<Retry>,
) {
    let Retry { k, spec, tries, .. } = retry;
    let params = match &spec.prompt {
        Some(prompt) => TaskRunParams {
            runtime: Some("opencode".into()),
            prompt: Some(prompt.clone()),
            model: Some("fake/fake-model".into()),
            agent: Some("build".into()),
            title: Some(format!("w{w}-t{k}")),
            ..TaskRunParams::default()
        },
        None => TaskRunParams {
            command: Some(spec.command.clone()),
            title: Some(format!("w{w}-t{k}")),
            ..TaskRunParams::default()
        },
    };
    match session.run_task(params).await {
        Ok(started) => {
            active.insert(
                started.task_id,
                Active {
                    k,
                    spec,
                    stdout: Vec::new(),
                    stderr: Vec::new(),
                    events: Vec::new(),
                    next_seq: 1,
                    gap: false,
                    duplicate: false,
                    streaming: false,
                },
            );
        }
        Err(SessionError::Rpc(e))
            if spec.kind == Kind::Opencode
                && e.message.contains("not ready")
                && tries < OPENCODE_TRIES =>
        {
            waiting.push(Retry {
                k,
                spec,
                at: Instant::now() + Duration::from_secs(1),
                tries: tries + 1,
            });
        }
        Err(SessionError::Rpc(e)) => {
            task_line(w, k, spec.kind, "run_refused", &e.to_string());
        }
        Err(e) => task_line(w, k, spec.kind, "gave_up", &e.to_string()),
    }
}

fn emit(line: Value) {
    println!("{line}");
}

fn task_line(w: u32, k: u64, kind: Kind, outcome: &str, detail: &str) {
    emit(
        json!({"t": "task", "w": w, "k": k, "kind": kind.name(), "outcome": outcome, "detail": detail}),
    );
}

/// Runs one phone until told to stop on stdin, then lets its tasks finish.
pub async fn run(
    host_file: &str,
    w: u32,
    seed: u64,
    window: usize,
    opencode: bool,
) -> anyhow::Result<()> {
    let host: KnownHost = serde_json::from_slice(
        &std::fs::read(host_file).with_context(|| format!("reading {host_file}"))?,
    )
    .with_context(|| format!("{host_file} is not a paired host"))?;
    let mut rng = StdRng::seed_from_u64(seed ^ (u64::from(w) << 32));
    let mut session = HostSession::open(host, &format!("soak-phone-{w}"), policy())
        .await
        .context("opening the first session")?;
    if std::env::var_os("SOAK_VERBOSE").is_some() {
        session.on_link_event(move |event| {
            eprintln!("phone {w} at {:.0}: {event:?}", mono_ms());
        });
    }
    // The driver's lines, read apart from the session: a roam is a network
    // change the phone's OS reports while the app may be busy in a call.
    let network = session.network_changes();
    let (command_tx, mut commands) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("mark roam ") {
                network.changed();
                if std::env::var_os("SOAK_VERBOSE").is_some() {
                    eprintln!("phone {w} at {:.0}: told of a network change", mono_ms());
                }
            }
            if command_tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut active: HashMap<String, Active> = HashMap::new();
    let mut next_k = 0u64;
    let mut stopping: Option<Instant> = None;
    let mut replies: Vec<(String, Instant)> = Vec::new();
    let mut mark: Option<(String, f64)> = None;
    let mut waiting: Vec<Retry> = Vec::new();
    let mut driver_there = true;
    loop {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = waiting.drain(..).partition(|r| r.at <= now);
        waiting = later;
        for retry in due {
            start(&mut session, w, retry, &mut active, &mut waiting).await;
        }
        while stopping.is_none() && active.len() + waiting.len() < window {
            let k = next_k;
            next_k += 1;
            let spec = spec(w, k, &mut rng, opencode);
            let first = Retry {
                k,
                spec,
                at: now,
                tries: 0,
            };
            start(&mut session, w, first, &mut active, &mut waiting).await;
        }
        if stopping.is_some() && active.is_empty() && waiting.is_empty() {
            break;
        }
        let reply_due = replies
            .iter()
            .map(|(_, due)| *due)
            .chain(waiting.iter().map(|r| r.at))
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let drain_end = stopping.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            notice = session.next_notice() => match notice {
                Ok(Notice::Chunk(chunk)) => {
                    if let Some(a) = active.get_mut(&chunk.task_id) {
                        if chunk.seq < a.next_seq {
                            a.duplicate = true;
                        } else if chunk.seq > a.next_seq {
                            a.gap = true;
                        }
                        a.next_seq = a.next_seq.max(chunk.seq + 1);
                        let bytes = openwork_host::tasks::chunk::chunk_bytes(&chunk);
                        match chunk.stream {
                            LogStream::Stderr => a.stderr.extend(bytes),
                            LogStream::Event => a.events.push(
                                serde_json::from_slice(&bytes)
                                    .unwrap_or_else(|e| json!({"kind": "unreadable", "error": e.to_string()})),
                            ),
                            LogStream::Stdout => a.stdout.extend(bytes),
                        }
                        a.streaming = matches!(a.spec.kind, Kind::Noisy | Kind::Bulk);
                    }
                    if let Some((kind, at)) = mark.take() {
                        let now = mono_ms();
                        if now >= at {
                            emit(json!({"t": "flow", "w": w, "after": kind, "ms": now - at}));
                        } else {
                            mark = Some((kind, at));
                        }
                    }
                }
                Ok(Notice::Updated(update)) if update.status.is_final() => {
                    if let Some(a) = active.remove(&update.task_id) {
                        let (outcome, detail) = verdict(&a, &update);
                        task_line(w, a.k, a.spec.kind, outcome, &detail);
                    }
                }
                Ok(Notice::PermissionRequest(request)) => {
                    // A person reads it and answers, a moment later.
                    let think = Duration::from_millis(rng.random_range(50..800));
                    replies.push((request.request_id, Instant::now() + think));
                }
                Ok(_) => {}
                Err(e) => {
                    // The session gave up: every task under way is lost to the user.
                    for (_, a) in active.drain() {
                        task_line(w, a.k, a.spec.kind, "gave_up", &e.to_string());
                    }
                }
            },
            line = commands.recv(), if driver_there => match line {
                Some(line) => {
                    let mut words = line.split_whitespace();
                    match (words.next(), words.next(), words.next()) {
                        (Some("mark"), Some(kind), Some(at)) => {
                            let streaming = active.values().any(|a| a.streaming);
                            if let Ok(at) = at.parse::<f64>()
                                && (streaming || kind == "restart")
                            {
                                mark = Some((kind.to_owned(), at));
                            }
                        }
                        (Some("stop"), _, _) => {
                            stopping = Some(Instant::now() + Duration::from_secs(90));
                        }
                        _ => {}
                    }
                }
                // The driver is gone: stop starting tasks.
                None => {
                    driver_there = false;
                    if stopping.is_none() {
                        stopping = Some(Instant::now() + Duration::from_secs(90));
                    }
                }
            },
            // A reply due, or a prompt to ask again (at the top of the loop).
            _ = tokio::time::sleep_until(reply_due) => {
                let now = Instant::now();
                let (due, later): (Vec<_>, Vec<_>) = replies.drain(..).partition(|(_, at)| *at <= now);
                replies = later;
                for (request_id, _) in due {
                    let answer: Result<Value, _> = session
                        .call("permission.reply", json!({"requestId": request_id, "decision": "once"}))
                        .await;
                    match answer {
                        Ok(_) => {}
                        // Not sent again by the library (it cannot know whether it
                        // arrived); the phone asks again once connected.
                        Err(SessionError::Interrupted { .. }) => {
                            replies.push((request_id, Instant::now() + Duration::from_millis(100)));
                        }
                        // Already decided (the first reply did arrive), or withdrawn.
                        Err(e) => emit(json!({"t": "note", "w": w, "reply": request_id, "error": e.to_string()})),
                    }
                }
            },
            _ = tokio::time::sleep_until(drain_end) => {
                for (_, a) in active.drain() {
                    task_line(w, a.k, a.spec.kind, "hung", "no final status 90 s after the soak ended");
                }
                for r in waiting.drain(..) {
                    task_line(w, r.k, r.spec.kind, "run_refused", "OpenCode still not ready 90 s after the soak ended");
                }
            }
        }
    }
    let stats = session.stats();
    emit(
        json!({"t": "stats", "w": w, "reconnects": stats.reconnects, "retried_calls": stats.retried_calls, "started": next_k}),
    );
    Ok(())
}
