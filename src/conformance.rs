//! Conformance fixtures: transcripts of messages to send and messages expected
//! back, replayed against any host. The format is documented in
//! `fixtures/README.md`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::client::KnownHosts;
use crate::client::hosts::KnownHost;
use crate::client::tls::connect_tls_stream;
use crate::datadir::DataDir;
use crate::transport::{FrameReader, FrameWriter, Framing, FramingMode, FramingSlot, ReadEvent};

const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// `openwork-host conformance` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Where to replay: `stdio` (a fresh `openwork-host stdio` per fixture,
    /// on a temporary data dir), `unix:PATH` (a running host's socket),
    /// `exec:COMMAND ARGS…` (any program speaking the protocol on stdio), or
    /// `tls://HOST:PORT` (a host this device is paired with: its pinned
    /// certificate and credential come from the client dir's hosts.toml).
    #[arg(long, default_value = "stdio")]
    pub target: String,
    /// Framing on stdio targets: `lsp` or `ndjson` (sockets use LSP).
    #[arg(long, default_value = "lsp")]
    pub framing: String,
    /// Where `tls://` targets are looked up (default: ~/.config/openwork-host).
    #[arg(long, env = "OPENWORK_CLIENT_DIR")]
    pub client_dir: Option<PathBuf>,
    /// Fixture files or directories (default: ./fixtures).
    pub fixtures: Vec<PathBuf>,
}

/// One transcript.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Fixture {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// `any` (default), `lsp` or `ndjson`: the framings the fixture applies to.
    #[serde(default = "any_framing")]
    pub framing: String,
    /// The fixture sends its own `initialize`. On targets that need a
    /// credential (`tls://`), the runner then adds `auth` to each
    /// `initialize` the fixture sends, instead of initializing first itself.
    #[serde(default)]
    pub initializes: bool,
    pub steps: Vec<Step>,
}

fn any_framing() -> String {
    "any".to_owned()
}

/// One step of a transcript.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Step {
    /// A JSON message to send (with `$ref:` placeholders replaced).
    #[serde(default)]
    pub send: Option<Value>,
    /// Text sent as one frame's body in the connection's framing, as is.
    #[serde(default)]
    pub send_body: Option<String>,
    /// Bytes sent with no framing at all.
    #[serde(default)]
    pub send_raw: Option<String>,
    /// Closes our sending side (the host sees end of input).
    #[serde(default)]
    pub close_input: Option<bool>,
    /// The next message must match.
    #[serde(default)]
    pub expect: Option<Value>,
    /// The next messages must match these, in any order.
    #[serde(default)]
    pub expect_unordered: Option<Vec<Value>>,
    /// The next frame's body must be exactly this text.
    #[serde(default)]
    pub expect_body: Option<String>,
    /// The host must close the connection.
    #[serde(default)]
    pub expect_closed: Option<bool>,
    /// Notifications with these methods are passed over while waiting.
    #[serde(default)]
    pub skip: Vec<String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// A note for the report.
    #[serde(default)]
    pub comment: Option<String>,
}

/// Where fixtures are replayed.
#[derive(Debug, Clone)]
pub enum Target {
    /// `openwork-host stdio` with a fresh data dir per fixture.
    Stdio { program: PathBuf, framing: Framing },
    /// A running host's unix socket.
    Unix(PathBuf),
    /// Any program speaking the protocol on stdio.
    Exec { argv: Vec<String>, framing: Framing },
    /// A paired host over TLS: its pinned certificate, and its credential
    /// for `initialize`.
    Tls(Box<KnownHost>),
}

impl Target {
    /// Parses `stdio`, `unix:PATH`, `exec:COMMAND…` or `tls://HOST:PORT`
    /// (looked up in the default client dir; see `Target::tls`).
    pub fn parse(target: &str, framing: &str, program: PathBuf) -> anyhow::Result<Target> {
        Self::parse_in(target, framing, program, &KnownHosts::default_dir())
    }

    /// Like `parse`, with `tls://` targets looked up in `client_dir`.
    pub fn parse_in(
        target: &str,
        framing: &str,
        program: PathBuf,
        client_dir: &Path,
    ) -> anyhow::Result<Target> {
        if let Some(address) = target.strip_prefix("tls://") {
            return Self::tls(address, client_dir);
        }
        let framing = match framing {
            "lsp" => Framing::Lsp,
            "ndjson" => Framing::Ndjson,
            other => bail!("unknown framing `{other}`: use `lsp` or `ndjson`"),
        };
        if target == "stdio" {
            return Ok(Target::Stdio { program, framing });
        }
        if let Some(path) = target.strip_prefix("unix:") {
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        if let Some(command) = target.strip_prefix("exec:") {
            let argv: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
            if argv.is_empty() {
                bail!("`exec:` needs a command");
            }
            return Ok(Target::Exec { argv, framing });
        }
        bail!(
            "unknown target `{target}`: use `stdio`, `unix:PATH`, `exec:COMMAND` or `tls://HOST:PORT`"
        )
    }

    /// A host this device is paired with, by the address it was paired at
    /// (or its name or host id), from `client_dir`'s hosts.toml.
    pub fn tls(address: &str, client_dir: &Path) -> anyhow::Result<Target> {
        let hosts = KnownHosts::load(client_dir)?;
        let Some(host) = hosts
            .all()
            .iter()
            .find(|h| h.address == address || h.name == address || h.host_id == address)
        else {
            bail!(
                "this device is not paired with a host at {address} (hosts in {}: {}); pair first with \
                 `openwork-host client pair {address} --code CODE`, or give --client-dir",
                hosts.path().display(),
                hosts
                    .all()
                    .iter()
                    .map(|h| format!("{} at {}", h.name, h.address))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        Ok(Target::Tls(Box::new(host.clone())))
    }

    fn framing(&self) -> Framing {
        match self {
            Target::Stdio { framing, .. } | Target::Exec { framing, .. } => *framing,
            Target::Unix(_) | Target::Tls(_) => Framing::Lsp,
        }
    }

    /// The credential to authenticate with, on targets that need one.
    fn credential(&self) -> Option<Value> {
        match self {
            Target::Tls(host) => Some(json!({"deviceId": host.device_id, "token": host.token})),
            _ => None,
        }
    }
}

/// The outcome of one fixture.
#[derive(Debug)]
pub enum Outcome {
    Passed,
    Skipped(String),
    Failed { step: usize, reason: String },
}

/// Loads fixtures from files and directories (`*.json`, sorted by name).
pub fn load(paths: &[PathBuf]) -> anyhow::Result<Vec<Fixture>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("cannot list {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    files
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a valid fixture", file.display()))
        })
        .collect()
}

type BoxRead = Box<dyn AsyncRead + Unpin + Send>;
type BoxWrite = Box<dyn AsyncWrite + Unpin + Send>;

struct Peer {
    reader: FrameReader<BoxRead>,
    /// `None` once our side is closed.
    writer: Option<FrameWriter<BoxWrite>>,
    child: Option<tokio::process::Child>,
    _data_dir: Option<tempfile::TempDir>,
}

impl Peer {
    async fn open(target: &Target) -> anyhow::Result<Peer> {
        let framing = target.framing();
        let limit = 1 << 30;
        match target {
            Target::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .with_context(|| format!("cannot connect to {}", path.display()))?;
                let (r, w) = stream.into_split();
                Ok(Peer {
                    reader: FrameReader::new(Box::new(r), FramingMode::Fixed(framing), limit),
                    writer: Some(FrameWriter::new(Box::new(w), FramingSlot::fixed(framing))),
                    child: None,
                    _data_dir: None,
                })
            }
            Target::Stdio { program, .. } => {
                let dir = tempfile::tempdir().context("cannot make a temporary data dir")?;
                let work = dir.path().join("workspace");
                std::fs::create_dir_all(&work)?;
                std::fs::write(
                    dir.path().join("config.toml"),
                    format!("[tasks]\nworkspace_roots = [{}]\n", toml_string(&work)),
                )?;
                let mut command = tokio::process::Command::new(program);
                command.arg("stdio").arg("--data-dir").arg(dir.path());
                let mut peer = Self::spawn(command, framing).await?;
                peer._data_dir = Some(dir);
                Ok(peer)
            }
            Target::Exec { argv, .. } => {
                let mut command = tokio::process::Command::new(&argv[0]);
                command.args(&argv[1..]);
                Self::spawn(command, framing).await
            }
            Target::Tls(host) => {
                let connected = connect_tls_stream(
                    &host.address,
                    Some(&host.fingerprint),
                    Duration::from_secs(15),
                )
                .await?;
                let (r, w) = tokio::io::split(connected.stream);
                Ok(Peer {
                    reader: FrameReader::new(Box::new(r), FramingMode::Fixed(framing), limit),
                    writer: Some(FrameWriter::new(Box::new(w), FramingSlot::fixed(framing))),
                    child: None,
                    _data_dir: None,
                })
            }
        }
    }

    async fn spawn(mut command: tokio::process::Command, framing: Framing) -> anyhow::Result<Peer> {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut child = command.spawn().context("cannot start the target")?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("the target's stdio could not be attached");
        };
        Ok(Peer {
            reader: FrameReader::new(Box::new(stdout), FramingMode::Fixed(framing), 1 << 30),
            writer: Some(FrameWriter::new(
                Box::new(stdin),
                FramingSlot::fixed(framing),
            )),
            child: Some(child),
            _data_dir: None,
        })
    }

    /// Closes our sending side. Dropping matters: shutting a pipe down does not close it.
    async fn close_input(&mut self) -> std::io::Result<()> {
        match self.writer.take() {
            Some(mut writer) => writer.shutdown().await,
            None => Ok(()),
        }
    }

    async fn close(mut self) {
        let _ = self.close_input().await;
        if let Some(mut child) = self.child.take()
            && tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

fn toml_string(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// Replays one fixture on a fresh connection.
pub async fn run_fixture(target: &Target, fixture: &Fixture) -> Outcome {
    let framing = match target.framing() {
        Framing::Lsp => "lsp",
        Framing::Ndjson => "ndjson",
    };
    if fixture.framing != "any" && fixture.framing != framing {
        return Outcome::Skipped(format!("{} framing only", fixture.framing));
    }
    let mut peer = match Peer::open(target).await {
        Ok(peer) => peer,
        Err(e) => {
            return Outcome::Failed {
                step: 0,
                reason: format!("{e:#}"),
            };
        }
    };
    let credential = target.credential();
    // A fixture that does not initialize runs on a connection the runner
    // has authenticated; one that does gets the credential in its own.
    let inject = match &credential {
        Some(auth) if !fixture.initializes => {
            if let Err(reason) = authenticate(&mut peer, auth).await {
                peer.close().await;
                return Outcome::Failed { step: 0, reason };
            }
            None
        }
        other => other.clone(),
    };
    let mut captures = HashMap::new();
    let mut outcome = Outcome::Passed;
    for (index, step) in fixture.steps.iter().enumerate() {
        if let Err(reason) = run_step(&mut peer, step, &mut captures, inject.as_ref()).await {
            let reason = match &step.comment {
                Some(comment) => format!("{reason} ({comment})"),
                None => reason,
            };
            outcome = Outcome::Failed {
                step: index + 1,
                reason,
            };
            break;
        }
    }
    peer.close().await;
    outcome
}

/// Sends `initialize` with the credential and waits for its success.
async fn authenticate(peer: &mut Peer, auth: &Value) -> Result<(), String> {
    let id = "conformance-auth";
    let initialize = json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "clientInfo": {"name": "openwork-host conformance", "version": env!("CARGO_PKG_VERSION")},
        "auth": auth,
    }});
    let body = serde_json::to_vec(&initialize).map_err(|e| e.to_string())?;
    send(peer, &body, true).await?;
    let deadline = Instant::now() + Duration::from_millis(DEFAULT_TIMEOUT_MS);
    loop {
        let (reply, _) = next_message(peer, &[], deadline)
            .await
            .map_err(|e| format!("authenticating: {e}"))?;
        if reply.get("id") != Some(&json!(id)) {
            continue;
        }
        return match reply.get("error") {
            Some(error) => Err(format!(
                "the host refused this device's credential: {}",
                compact(error)
            )),
            None => Ok(()),
        };
    }
}

/// Adds `auth` to the params of every `initialize` in `message` (or batch).
fn with_auth(message: Value, auth: &Value) -> Value {
    match message {
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|m| with_auth(m, auth)).collect())
        }
        Value::Object(mut map) if map.get("method") == Some(&json!("initialize")) => {
            match map.get_mut("params") {
                Some(Value::Object(params)) => {
                    params.insert("auth".into(), auth.clone());
                }
                None => {
                    map.insert("params".into(), json!({"auth": auth}));
                }
                // Wrong-typed params stay wrong: that is what such a fixture tests.
                Some(_) => {}
            }
            Value::Object(map)
        }
        other => other,
    }
}

async fn run_step(
    peer: &mut Peer,
    step: &Step,
    captures: &mut HashMap<String, Value>,
    auth: Option<&Value>,
) -> Result<(), String> {
    let timeout = Duration::from_millis(step.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS));
    let deadline = Instant::now() + timeout;
    if let Some(message) = &step.send {
        let mut message = substitute(message, captures)?;
        if let Some(auth) = auth {
            message = with_auth(message, auth);
        }
        let body = serde_json::to_vec(&message).map_err(|e| e.to_string())?;
        send(peer, &body, true).await?;
    }
    if let Some(body) = &step.send_body {
        send(peer, body.as_bytes(), true).await?;
    }
    if let Some(raw) = &step.send_raw {
        send(peer, raw.as_bytes(), false).await?;
    }
    if step.close_input == Some(true) {
        peer.close_input()
            .await
            .map_err(|e| format!("cannot close our side: {e}"))?;
    }
    if let Some(expected) = &step.expect {
        let (actual, _) = next_message(peer, &step.skip, deadline).await?;
        match_value(expected, &actual, captures, "message")
            .map_err(|e| format!("{e}\n      got: {}", compact(&actual)))?;
    }
    if let Some(expected) = &step.expect_unordered {
        let mut remaining: Vec<&Value> = expected.iter().collect();
        while !remaining.is_empty() {
            let (actual, _) = next_message(peer, &step.skip, deadline).await?;
            let position = remaining.iter().position(|e| {
                let mut trial = captures.clone();
                match_value(e, &actual, &mut trial, "message").is_ok()
            });
            match position {
                Some(i) => {
                    match_value(remaining[i], &actual, captures, "message")?;
                    remaining.remove(i);
                }
                None => return Err(format!("unexpected message {}", compact(&actual))),
            }
        }
    }
    if let Some(expected) = &step.expect_body {
        let (_, body) = next_message(peer, &step.skip, deadline).await?;
        if body != *expected {
            return Err(format!("expected the body {expected}\n      got: {body}"));
        }
    }
    if step.expect_closed == Some(true) {
        loop {
            let event = tokio::time::timeout_at(deadline.into(), peer.reader.next()).await;
            match event {
                Err(_) => return Err("the host did not close the connection".into()),
                Ok(Ok(ReadEvent::Frame(body))) => {
                    let text = String::from_utf8_lossy(&body);
                    let skippable = serde_json::from_slice::<Value>(&body)
                        .ok()
                        .and_then(|v| v.get("method").and_then(Value::as_str).map(str::to_owned))
                        .is_some_and(|m| step.skip.contains(&m));
                    if !skippable {
                        return Err(format!("expected the connection to close, got {text}"));
                    }
                }
                Ok(_) => return Ok(()),
            }
        }
    }
    Ok(())
}

async fn send(peer: &mut Peer, bytes: &[u8], framed: bool) -> Result<(), String> {
    let Some(writer) = peer.writer.as_mut() else {
        return Err("cannot send: our side is already closed".into());
    };
    let sent = if framed {
        writer.write_frame(bytes).await
    } else {
        writer.write_raw(bytes).await
    };
    sent.and(writer.flush().await)
        .map_err(|e| format!("cannot send: {e}"))
}

async fn next_message(
    peer: &mut Peer,
    skip: &[String],
    deadline: Instant,
) -> Result<(Value, String), String> {
    loop {
        let event = tokio::time::timeout_at(deadline.into(), peer.reader.next())
            .await
            .map_err(|_| "timed out waiting for a message".to_owned())?;
        let body = match event {
            Ok(ReadEvent::Frame(body)) => body,
            Ok(ReadEvent::Eof) => return Err("the host closed the connection".into()),
            Ok(ReadEvent::TooLarge { .. }) => return Err("the host sent an oversized frame".into()),
            Err(e) => return Err(format!("bad frame from the host: {e}")),
        };
        let text = String::from_utf8(body).map_err(|_| "the host sent invalid UTF-8".to_owned())?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| format!("the host sent invalid JSON ({e}): {text}"))?;
        let method = value.get("method").and_then(Value::as_str);
        if method.is_some_and(|m| skip.iter().any(|s| s == m)) {
            continue;
        }
        return Ok((value, text));
    }
}

fn compact(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 400 {
        format!(
            "{}…",
            &text[..text.char_indices().nth(400).map_or(text.len(), |(i, _)| i)]
        )
    } else {
        text
    }
}

/// Replaces `$ref:NAME` strings with captured values.
pub fn substitute(value: &Value, captures: &HashMap<String, Value>) -> Result<Value, String> {
    Ok(match value {
        Value::String(s) if s.starts_with("$ref:") => captures
            .get(&s[5..])
            .cloned()
            .ok_or_else(|| format!("nothing was captured as `{}`", &s[5..]))?,
        Value::String(s) if s.starts_with("$$") => Value::String(s[1..].to_owned()),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| substitute(v, captures))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), substitute(v, captures)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// Checks `actual` against `expected`, placeholders included (see fixtures/README.md).
pub fn match_value(
    expected: &Value,
    actual: &Value,
    captures: &mut HashMap<String, Value>,
    path: &str,
) -> Result<(), String> {
    let mismatch = |what: &str| {
        Err(format!(
            "at {path}: expected {what}, got {}",
            compact(actual)
        ))
    };
    match expected {
        Value::String(s) if s.starts_with('$') && !s.starts_with("$$") => match s.as_str() {
            "$any" => Ok(()),
            "$string" if actual.is_string() => Ok(()),
            "$number" if actual.is_number() => Ok(()),
            "$integer" if actual.is_i64() || actual.is_u64() => Ok(()),
            "$boolean" if actual.is_boolean() => Ok(()),
            "$object" if actual.is_object() => Ok(()),
            "$array" if actual.is_array() => Ok(()),
            "$timestamp"
                if actual
                    .as_str()
                    .is_some_and(|t| humantime::parse_rfc3339(t).is_ok()) =>
            {
                Ok(())
            }
            _ if s.starts_with("$capture:") => {
                captures.insert(s["$capture:".len()..].to_owned(), actual.clone());
                Ok(())
            }
            _ if s.starts_with("$ref:") => match captures.get(&s[5..]) {
                Some(v) if v == actual => Ok(()),
                Some(v) => mismatch(&format!("the captured `{}` ({})", &s[5..], compact(v))),
                None => Err(format!("at {path}: nothing was captured as `{}`", &s[5..])),
            },
            _ if s.starts_with("$contains:") => match actual.as_str() {
                Some(text) if text.contains(&s["$contains:".len()..]) => Ok(()),
                _ => mismatch(&format!(
                    "a string containing {:?}",
                    &s["$contains:".len()..]
                )),
            },
            "$string" | "$number" | "$integer" | "$boolean" | "$object" | "$array"
            | "$timestamp" => mismatch(&s[1..]),
            other => Err(format!("at {path}: unknown placeholder {other}")),
        },
        Value::String(s) if s.starts_with("$$") => {
            if actual.as_str() == Some(&s[1..]) {
                Ok(())
            } else {
                mismatch(&format!("{:?}", &s[1..]))
            }
        }
        Value::Object(expected_map) => {
            let Some(actual_map) = actual.as_object() else {
                return mismatch("an object");
            };
            let partial = expected_map.get("$partial") == Some(&Value::Bool(true));
            for (key, value) in expected_map {
                if key == "$partial" {
                    continue;
                }
                match actual_map.get(key) {
                    Some(actual_value) => {
                        match_value(value, actual_value, captures, &format!("{path}.{key}"))?
                    }
                    None => {
                        return Err(format!(
                            "at {path}: member `{key}` is missing in {}",
                            compact(actual)
                        ));
                    }
                }
            }
            if !partial
                && let Some(extra) = actual_map.keys().find(|k| !expected_map.contains_key(*k))
            {
                return Err(format!(
                    "at {path}: unexpected member `{extra}` in {}",
                    compact(actual)
                ));
            }
            Ok(())
        }
        Value::Array(expected_items) => {
            let Some(actual_items) = actual.as_array() else {
                return mismatch("an array");
            };
            if actual_items.len() != expected_items.len() {
                return mismatch(&format!("{} items", expected_items.len()));
            }
            for (i, (e, a)) in expected_items.iter().zip(actual_items).enumerate() {
                match_value(e, a, captures, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        Value::Number(n) => match (n.as_f64(), actual.as_f64()) {
            (Some(x), Some(y)) if x == y => Ok(()),
            _ => mismatch(&n.to_string()),
        },
        other if other == actual => Ok(()),
        other => mismatch(&compact(other)),
    }
}

/// A line of the report on stdout; a reader that went away (`| head`)
/// loses the rest of the report, and the run goes on to its exit status.
macro_rules! report {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, $($arg)*).and_then(|()| out.flush());
    }};
}

/// Replays fixtures and prints a report; the summary line reads "N passed, M failed".
pub async fn replay(target: &Target, fixtures: &[Fixture]) -> (usize, usize, usize) {
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for fixture in fixtures {
        let started = Instant::now();
        match run_fixture(target, fixture).await {
            Outcome::Passed => {
                passed += 1;
                report!(
                    "PASS {} ({} ms)",
                    fixture.name,
                    started.elapsed().as_millis()
                );
            }
            Outcome::Skipped(why) => {
                skipped += 1;
                report!("SKIP {} ({why})", fixture.name);
            }
            Outcome::Failed { step, reason } => {
                failed += 1;
                report!("FAIL {} at step {step}: {reason}", fixture.name);
            }
        }
    }
    report!("conformance: {passed} passed, {failed} failed, {skipped} skipped");
    (passed, failed, skipped)
}

/// The `conformance` command.
pub async fn main(args: Args, _data_dir: &DataDir) -> anyhow::Result<ExitCode> {
    let program = std::env::current_exe().context("cannot find this program's path")?;
    let client_dir = args.client_dir.unwrap_or_else(KnownHosts::default_dir);
    let target = Target::parse_in(&args.target, &args.framing, program, &client_dir)?;
    let paths = if args.fixtures.is_empty() {
        vec![PathBuf::from("fixtures")]
    } else {
        args.fixtures
    };
    let fixtures = load(&paths)?;
    if fixtures.is_empty() {
        bail!(
            "no fixtures found in {}: name fixture files or directories of `*.json` fixtures \
             (the repository's `fixtures/`), or run from the repository's root",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let (_, failed, _) = replay(&target, &fixtures).await;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn placeholders_match_and_capture() {
        let mut captures = HashMap::new();
        let expected = json!({"id": 1, "result": {"taskId": "$capture:t", "status": "queued", "n": "$integer", "at": "$timestamp"}});
        let actual = json!({"id": 1, "result": {"taskId": "t_1", "status": "queued", "n": 3, "at": "2026-01-01T00:00:00.000Z"}});
        match_value(&expected, &actual, &mut captures, "m").unwrap();
        assert_eq!(captures["t"], json!("t_1"));
        match_value(
            &json!({"taskId": "$ref:t"}),
            &json!({"taskId": "t_1"}),
            &mut captures,
            "m",
        )
        .unwrap();
        assert!(
            match_value(
                &json!({"taskId": "$ref:t"}),
                &json!({"taskId": "t_2"}),
                &mut captures,
                "m"
            )
            .is_err()
        );
        assert_eq!(
            substitute(&json!({"taskId": "$ref:t", "x": "$$lit"}), &captures).unwrap(),
            json!({"taskId": "t_1", "x": "$lit"})
        );
    }

    #[test]
    fn objects_are_exact_unless_partial() {
        let mut c = HashMap::new();
        assert!(match_value(&json!({"a": 1}), &json!({"a": 1, "b": 2}), &mut c, "m").is_err());
        assert!(
            match_value(
                &json!({"a": 1, "$partial": true}),
                &json!({"a": 1, "b": 2}),
                &mut c,
                "m"
            )
            .is_ok()
        );
        assert!(match_value(&json!({"a": 1}), &json!({}), &mut c, "m").is_err());
        assert!(match_value(&json!([1, 2]), &json!([1]), &mut c, "m").is_err());
        assert!(match_value(&json!("$integer"), &json!(1.5), &mut c, "m").is_err());
        assert!(
            match_value(
                &json!("$contains:outside"),
                &json!("is outside the roots"),
                &mut c,
                "m"
            )
            .is_ok()
        );
    }
}
