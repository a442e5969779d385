//! The device's commands, over TLS: `client discover|pair|run|tasks|logs|health|reply|hosts|forget`.
//!
//! Every command talks through a `HostSession`, so a dropped connection or a
//! host restart is bridged: `run` and `logs --follow` carry on where they
//! were, showing a "reconnecting" line meanwhile; a host whose address
//! changed is found again on the LAN by its id.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::out::outln;
use super::prompts::PromptQueue;
use super::render;
use openwork_host::auth::Scope;
use openwork_host::client::pair::PairError;
use openwork_host::client::pair::{PairLink, PairRequest, pair};
use openwork_host::client::{HostSession, KnownHosts, Notice, ReconnectPolicy, SessionError};
use openwork_host::discovery::{self, BrowseEvent, Browser, DiscoveredHost};
use openwork_host::protocol::{Decision, PermissionRequest};
use openwork_host::protocol::{
    HealthReport, LogChunk, TaskListResult, TaskLogsResult, TaskRecord, TaskRunParams, TaskUpdate,
};
use openwork_host::rpc::ErrorCode;
use openwork_host::tasks::chunk::chunk_bytes;
use openwork_host::transport::tls::DEFAULT_PORT;

/// `openwork-host client …`.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// List the hosts that advertise themselves on the LAN (mDNS).
    Discover {
        /// How long to listen for answers, in seconds.
        #[arg(long, default_value_t = 3.0)]
        timeout: f64,
        #[arg(long)]
        json: bool,
        /// Keep listening until --timeout and print each change as it comes
        /// (one JSON object a line with --json).
        #[arg(long)]
        watch: bool,
    },
    /// Pair this device with a host, using the code `openwork-host pair` shows there.
    Pair(PairArgs),
    /// Run a command on the host, streaming its output; exits with its exit code.
    /// A dropped connection is bridged: the output resumes where it stopped,
    /// and the task is never started twice.
    Run(RunArgs),
    /// List the host's tasks, newest first.
    Tasks {
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        json: bool,
        /// How long to keep trying to reconnect after a drop (default 15s).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        reconnect_timeout: Option<Duration>,
    },
    /// Print a task's output; with --follow, keep printing until it ends
    /// (across dropped connections and host restarts).
    Logs {
        task_id: String,
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        follow: bool,
        /// How long to keep trying to reconnect after a drop (default 5m
        /// with --follow, else 15s).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        reconnect_timeout: Option<Duration>,
    },
    /// The host's health panel; exit status 0 ok, 1 degraded, 2 error.
    Health {
        #[arg(long)]
        host: Option<String>,
        #[arg(long)]
        json: bool,
        /// How long to keep trying to reconnect after a drop (default 15s).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        reconnect_timeout: Option<Duration>,
    },
    /// Answer a permission request (`once`, `always` or `reject`).
    Reply {
        request_id: String,
        decision: String,
        #[arg(long)]
        host: Option<String>,
        /// How long to keep trying to reconnect after a drop (default 15s).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        reconnect_timeout: Option<Duration>,
    },
    /// The hosts this device is paired with.
    Hosts,
    /// Forget a paired host (pair again to reconnect).
    Forget { host: String },
}

// `client pair` (its help is the variant's doc comment).
#[derive(Debug, Args)]
pub struct PairArgs {
    /// The host's `ADDR[:PORT]` (port 4747 when left out), or its name as
    /// `client discover` lists it.
    pub address: Option<String>,
    /// The code shown on the host.
    #[arg(long)]
    pub code: Option<String>,
    /// The QR code's link (`https://ADDR:PORT/#pair?code=…` or `openwork://pair?…`) instead of ADDR and --code.
    #[arg(long)]
    pub uri: Option<String>,
    /// This device's name, shown to the host's owner (default: this machine's hostname).
    #[arg(long)]
    pub name: Option<String>,
    /// Scopes to ask for, comma-separated (default: all the host offers).
    #[arg(long)]
    pub scopes: Option<String>,
    /// How long to wait for the owner's approval, in seconds.
    #[arg(long, default_value_t = 300)]
    pub wait: u64,
    /// How long to look for a host by name on the LAN, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub timeout: f64,
}

// `client run` (its help is the variant's doc comment).
#[derive(Debug, Args)]
pub struct RunArgs {
    #[arg(long)]
    pub host: Option<String>,
    /// Once connected, how long to keep trying to reconnect after a drop
    /// before giving up, e.g. `30s`, `10m` (default 5m).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub reconnect_timeout: Option<Duration>,
    /// Working directory on the host (absolute, or relative to its first
    /// workspace root; default: the first workspace root).
    #[arg(long)]
    pub cwd: Option<String>,
    #[arg(long)]
    pub title: Option<String>,
    /// Seconds before the host stops the task.
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Extra environment variables, NAME=VALUE.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Reject every permission request without asking (for scripts).
    #[arg(long)]
    pub deny_sensitive: bool,
    /// The program and its arguments.
    #[arg(required = true, last = true)]
    pub command: Vec<String>,
}

/// How long one-shot commands keep trying to reach the host again after a drop.
const ONE_SHOT_RECONNECT: Duration = Duration::from_secs(15);
/// How long `run` and `logs --follow` keep trying to reach the host again after a drop.
const FOLLOW_RECONNECT: Duration = Duration::from_secs(300);

/// Exit status after Ctrl-C, as a shell gives it (128 + SIGINT).
const INTERRUPTED: u8 = 130;

/// A session's failure in the command line's words: what the host's error
/// says to do names commands, not methods, and a device the host no longer
/// knows is told how to pair again or forget the host.
fn session_error(e: SessionError, host: &str) -> anyhow::Error {
    match e {
        SessionError::Rpc(rpc) => anyhow::anyhow!("{}", render::rpc_message(&rpc)),
        SessionError::Refused(rpc) if rpc.code == ErrorCode::UNAUTHORIZED => anyhow::anyhow!(
            "this device's pairing was revoked by the host's owner; pair again with \
             `openwork-host client pair …` (the owner runs `openwork-host pair` on {host} for a code) \
             or remove it with `openwork-host client forget {}`",
            shell_word(host)
        ),
        SessionError::Refused(rpc) => {
            anyhow::anyhow!(
                "the host refused this device: {}",
                render::rpc_message(&rpc)
            )
        }
        other => anyhow::anyhow!(other),
    }
}

/// A host name as a shell word, quoted when it has to be.
fn shell_word(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:@/+".contains(c))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "device".to_owned())
}

fn with_port(address: &str) -> String {
    let has_port = match address.rsplit_once(':') {
        Some((host, port)) => {
            port.parse::<u16>().is_ok() && (!host.contains(':') || host.ends_with(']'))
        }
        None => false,
    };
    if has_port {
        address.to_owned()
    } else if address.contains(':') && !address.starts_with('[') {
        format!("[{address}]:{DEFAULT_PORT}")
    } else {
        format!("{address}:{DEFAULT_PORT}")
    }
}

/// How long a host whose stored address no longer answers is looked for on
/// the LAN (by its id), per connection attempt.
const FIND_AGAIN: Duration = Duration::from_secs(5);

/// A session with the chosen host that reconnects for up to `give_up_after`,
/// showing its progress on stderr. When the stored address does not answer,
/// the host is looked for on the LAN by its id, and its new address saved.
async fn session(
    hosts: &mut KnownHosts,
    name: Option<&str>,
    give_up_after: Duration,
) -> anyhow::Result<HostSession> {
    let host = hosts.find(name)?.clone();
    let policy = ReconnectPolicy {
        give_up_after,
        find_on_lan: Some(FIND_AGAIN),
        ..ReconnectPolicy::default()
    };
    let status = render::link_status(&host.name);
    let name = host.name.clone();
    let conn =
        HostSession::open_observed(host, "openwork-host client", policy, Some(Box::new(status)))
            .await
            .map_err(|e| session_error(e, &name))?;
    remember_address(hosts, &conn)?;
    Ok(conn)
}

/// Saves the address a session found its host at, when that changed.
fn remember_address(hosts: &mut KnownHosts, conn: &HostSession) -> anyhow::Result<()> {
    let now = conn.host();
    let stored = hosts.all().iter().find(|h| h.host_id == now.host_id);
    if stored.is_some_and(|h| h.address != now.address) {
        hosts.add(now.clone());
        hosts.save()?;
    }
    Ok(())
}

fn seconds(value: f64, flag: &str) -> anyhow::Result<Duration> {
    if !(value > 0.0 && value <= 3600.0) {
        bail!("{flag} takes a number of seconds between 0 and 3600, got {value}");
    }
    Ok(Duration::from_secs_f64(value))
}

/// Whether `target` is an address (`IP`, `IP:PORT`, `NAME:PORT`) rather than
/// a name to look for on the LAN.
fn is_address(target: &str) -> bool {
    let without_zone = target.split('%').next().unwrap_or(target);
    without_zone.parse::<std::net::IpAddr>().is_ok()
        || target.parse::<std::net::SocketAddr>().is_ok()
        || target
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// A discovered host as `client discover` lists it.
#[derive(serde::Serialize)]
struct Listed<'a> {
    #[serde(flatten)]
    host: &'a DiscoveredHost,
    /// This device is paired with a host of that id.
    paired: bool,
}

fn is_paired(hosts: &KnownHosts, found: &DiscoveredHost) -> bool {
    found
        .host_id
        .as_deref()
        .is_some_and(|id| hosts.all().iter().any(|h| h.host_id == id))
}

fn found_line(found: &DiscoveredHost, paired: bool) -> String {
    let id: String = found
        .host_id
        .as_deref()
        .unwrap_or("?")
        .chars()
        .take(12)
        .collect();
    let mut line = format!(
        "{:<24} {:<28} {:<5} {:<7} {:<6} {id}",
        found.name,
        found.addresses.first().map(String::as_str).unwrap_or("-"),
        found.port,
        if found.pairing_open { "open" } else { "closed" },
        if paired { "yes" } else { "no" },
    );
    for more in found.addresses.iter().skip(1) {
        line.push_str(&format!("\n{:<24} {more}", ""));
    }
    line
}

async fn discover(
    hosts: &KnownHosts,
    timeout: Duration,
    json_out: bool,
    watch: bool,
) -> anyhow::Result<ExitCode> {
    let mut browser = Browser::start()?;
    if !watch {
        let _ =
            tokio::time::timeout(timeout, async { while browser.next().await.is_some() {} }).await;
        let found = browser.hosts();
        let text = if json_out {
            let listed: Vec<Listed> = found
                .iter()
                .map(|host| Listed {
                    host,
                    paired: is_paired(hosts, host),
                })
                .collect();
            serde_json::to_string_pretty(&listed)?
        } else if found.is_empty() {
            format!(
                "No host answered within {:.1} s. A host may not advertise (`serve --no-mdns`), or multicast may not \
                 cross this network: pair with its ADDR:PORT or its `openwork-host pair` QR link instead.",
                timeout.as_secs_f64()
            )
        } else {
            let mut text = format!(
                "{:<24} {:<28} {:<5} {:<7} {:<6} ID",
                "NAME", "ADDRESS", "PORT", "PAIRING", "PAIRED"
            );
            for host in &found {
                text.push('\n');
                text.push_str(&found_line(host, is_paired(hosts, host)));
            }
            text
        };
        outln!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        let event = tokio::select! {
            _ = &mut deadline => break,
            event = browser.next() => match event {
                Some(event) => event,
                None => break,
            },
        };
        let line = match (&event, json_out) {
            (BrowseEvent::Resolved(host), true) => serde_json::to_string(
                &json!({"event": "resolved", "host": Listed { host, paired: is_paired(hosts, host) }}),
            )?,
            (BrowseEvent::Removed { name }, true) => {
                serde_json::to_string(&json!({"event": "removed", "name": name}))?
            }
            (BrowseEvent::Resolved(host), false) => format!(
                "+ {} {}:{} pairing {}",
                host.name,
                host.addresses.first().map(String::as_str).unwrap_or("-"),
                host.port,
                if host.pairing_open { "open" } else { "closed" }
            ),
            (BrowseEvent::Removed { name }, false) => format!("- {name}"),
        };
        outln!("{line}");
        if super::out::closed() {
            break; // A closed pipe ends the watch.
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where to pair: a name looked for on the LAN becomes its addresses, best
/// first; anything else is one `host:port`.
async fn pair_targets(target: &str, timeout: Duration) -> anyhow::Result<Vec<String>> {
    if is_address(target) {
        return Ok(vec![with_port(target)]);
    }
    eprintln!("Looking for `{target}` on the LAN…");
    let found = discovery::find(timeout, |h| h.name == target)
        .await
        .unwrap_or_else(|e| {
            eprintln!("cannot look on the LAN: {e}");
            None
        });
    match found {
        Some(host) if !host.endpoints.is_empty() => {
            if !host.pairing_open {
                eprintln!(
                    "{} does not advertise an open pairing window; trying anyway.",
                    host.name
                );
            }
            Ok(host.endpoints.iter().map(|a| a.to_string()).collect())
        }
        _ if target.contains(char::is_whitespace) => bail!(
            "no host called `{target}` answered on the LAN within {:.1} s (see `openwork-host client discover`); \
             pair with its ADDR:PORT or `--uri` instead",
            timeout.as_secs_f64()
        ),
        _ => {
            eprintln!("No host called `{target}` answered on the LAN; trying it as a DNS name.");
            Ok(vec![with_port(target)])
        }
    }
}

/// Runs a client subcommand with the hosts file in `dir`: one function each.
pub async fn run(dir: PathBuf, command: ClientCommand) -> anyhow::Result<ExitCode> {
    let mut hosts = KnownHosts::load(&dir)?;
    match command {
        ClientCommand::Discover {
            timeout,
            json,
            watch,
        } => discover(&hosts, seconds(timeout, "--timeout")?, json, watch).await,
        ClientCommand::Pair(args) => pair_command(&mut hosts, args).await,
        ClientCommand::Run(args) => run_command(&mut hosts, args).await,
        ClientCommand::Tasks {
            host,
            status,
            limit,
            json,
            reconnect_timeout,
        } => {
            let give_up = reconnect_timeout.unwrap_or(ONE_SHOT_RECONNECT);
            let conn = session(&mut hosts, host.as_deref(), give_up).await?;
            tasks_command(conn, status, limit, json).await
        }
        ClientCommand::Logs {
            task_id,
            host,
            follow,
            reconnect_timeout,
        } => {
            let give_up = reconnect_timeout.unwrap_or(if follow {
                FOLLOW_RECONNECT
            } else {
                ONE_SHOT_RECONNECT
            });
            let conn = session(&mut hosts, host.as_deref(), give_up).await?;
            logs_command(conn, &task_id, follow).await
        }
        ClientCommand::Health {
            host,
            json,
            reconnect_timeout,
        } => {
            let give_up = reconnect_timeout.unwrap_or(ONE_SHOT_RECONNECT);
            let conn = session(&mut hosts, host.as_deref(), give_up).await?;
            health_command(conn, json).await
        }
        ClientCommand::Reply {
            request_id,
            decision,
            host,
            reconnect_timeout,
        } => {
            if !matches!(decision.as_str(), "once" | "always" | "reject") {
                bail!("the decision is `once`, `always` or `reject`, not `{decision}`");
            }
            let give_up = reconnect_timeout.unwrap_or(ONE_SHOT_RECONNECT);
            let conn = session(&mut hosts, host.as_deref(), give_up).await?;
            reply_command(conn, &request_id, &decision).await
        }
        ClientCommand::Hosts => hosts_command(&hosts),
        ClientCommand::Forget { host } => forget_command(&mut hosts, &host),
    }
}

/// `client pair`: pairs with the host and remembers it.
async fn pair_command(hosts: &mut KnownHosts, args: PairArgs) -> anyhow::Result<ExitCode> {
    let PairArgs {
        address,
        code,
        uri,
        name,
        scopes,
        wait,
        timeout,
    } = args;
    let (targets, code, fingerprint) = match (uri, address) {
        (Some(uri), _) => {
            let link = PairLink::parse(&uri)
                .context("not a pairing link: expected https://ADDR:PORT/#pair?code=…&fp=… or openwork://pair?host=…&port=…&code=…")?;
            (
                vec![link.address],
                code.unwrap_or(link.code),
                link.fingerprint,
            )
        }
        (None, Some(address)) => {
            let Some(code) = code else {
                bail!("give the code shown on the host with --code")
            };
            let timeout = seconds(timeout, "--timeout")?;
            (pair_targets(&address, timeout).await?, code, None)
        }
        (None, None) => bail!("give the host's address (ADDR[:PORT]), its name, or --uri"),
    };
    let mut request = PairRequest {
        address: String::new(),
        code: code.chars().filter(|c| !c.is_whitespace()).collect(),
        device_name: name.unwrap_or_else(hostname),
        scopes: scopes.as_deref().map(render::parse_scopes).transpose()?,
        expected_fingerprint: fingerprint,
        approval_timeout: Duration::from_secs(wait),
    };
    // A host found by name may have several addresses: try them in
    // order until one answers (no code is spent on one that does not).
    let mut paired = None;
    for (i, address) in targets.iter().enumerate() {
        request.address = address.clone();
        eprintln!(
            "Connecting to {address}… once the code checks out, the host's owner must approve this device."
        );
        match pair(&request).await {
            Err(PairError::Connect(e)) if e.is_unreachable() && i + 1 < targets.len() => {
                eprintln!("{e}; trying the next address.");
            }
            other => {
                paired = Some(other?);
                break;
            }
        }
    }
    let host = paired.context("no address to pair with")?;
    outln!(
        "Paired with {} ({}) as device {}, with: {}.",
        host.name,
        host.address,
        host.device_id,
        host.scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    outln!(
        "Pinned fingerprint {}.",
        render::grouped(&host.fingerprint, 4)
    );
    hosts.add(host);
    hosts.save()?;
    outln!("Saved in {}.", hosts.path().display());
    Ok(ExitCode::SUCCESS)
}

/// `client run`: starts the command on the host and streams it to its end.
async fn run_command(hosts: &mut KnownHosts, args: RunArgs) -> anyhow::Result<ExitCode> {
    let RunArgs {
        host,
        reconnect_timeout,
        cwd,
        title,
        timeout,
        env,
        deny_sensitive,
        command,
    } = args;
    let mut env_map = std::collections::BTreeMap::new();
    for pair in env {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("--env takes NAME=VALUE, got `{pair}`")
        };
        env_map.insert(k.to_owned(), v.to_owned());
    }
    let give_up = reconnect_timeout.unwrap_or(FOLLOW_RECONNECT);
    let mut conn = session(hosts, host.as_deref(), give_up).await?;
    let name = conn.host().name.clone();
    let params = TaskRunParams {
        argv: Some(command),
        cwd,
        title,
        timeout_s: timeout,
        env: (!env_map.is_empty()).then_some(env_map),
        ..TaskRunParams::default()
    };
    // The session adds an idempotency key, so that sending it again
    // after a drop cannot start a second task.
    let started = conn
        .run_task(params)
        .await
        .map_err(|e| session_error(e, &name))?;
    let task_id = started.task_id;
    // Where it runs, for the person watching; a script reading
    // stderr gets the task's own stderr only.
    if std::io::stderr().is_terminal() {
        let record: Result<TaskRecord, _> = conn.call("task.get", json!({"taskId": task_id})).await;
        if let Ok(record) = record {
            eprintln!(
                "openwork-host: task {task_id} runs on {name} in {} (Ctrl-C cancels it)",
                record.cwd
            );
        }
    }
    let prompts = if deny_sensitive {
        Prompts::Reject
    } else if std::io::stdin().is_terminal() {
        Prompts::Ask
    } else {
        Prompts::Wait
    };
    Ok(
        match stream_task(&mut conn, &task_id, true, prompts).await? {
            Streamed::Ended(update) => exit_code(&update),
            Streamed::Interrupted => ExitCode::from(INTERRUPTED),
        },
    )
}

/// `client tasks`: the host's tasks, newest first.
async fn tasks_command(
    mut conn: HostSession,
    status: Option<String>,
    limit: u32,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    let list: TaskListResult = conn
        .call(
            "task.list",
            strip_nulls(json!({"status": status, "limit": limit})),
        )
        .await
        .map_err(|e| session_error(e, &conn.host().name))?;
    if json_out {
        outln!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        outln!(
            "{:<20} {:<12} {:<5} {:<25} WHAT",
            "TASK",
            "STATUS",
            "EXIT",
            "CREATED"
        );
        for t in &list.tasks {
            print_task(t);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `client logs`: a task's output, page by page, or followed to its end.
async fn logs_command(
    mut conn: HostSession,
    task_id: &str,
    follow: bool,
) -> anyhow::Result<ExitCode> {
    let name = conn.host().name.clone();
    if follow {
        conn.follow(task_id, 1)
            .await
            .map_err(|e| session_error(e, &name))?;
        let prompts = if std::io::stdin().is_terminal() {
            Prompts::Ask
        } else {
            Prompts::Wait
        };
        return Ok(
            match stream_task(&mut conn, task_id, false, prompts).await? {
                Streamed::Ended(update) => exit_code(&update),
                Streamed::Interrupted => ExitCode::from(INTERRUPTED),
            },
        );
    }
    let mut next = 1;
    while !super::out::closed() {
        let page: TaskLogsResult = conn
            .call(
                "task.logs",
                json!({"taskId": task_id, "fromSeq": next, "limit": 500}),
            )
            .await
            .map_err(|e| session_error(e, &name))?;
        for chunk in &page.chunks {
            write_chunk(chunk);
        }
        if page.chunks.is_empty() || page.done {
            break;
        }
        next = page.next_seq;
    }
    Ok(ExitCode::SUCCESS)
}

/// `client health`: the host's health panel; the exit status follows it.
async fn health_command(mut conn: HostSession, json_out: bool) -> anyhow::Result<ExitCode> {
    let health: HealthReport = conn
        .call("health.get", json!({}))
        .await
        .map_err(|e| session_error(e, &conn.host().name))?;
    if json_out {
        outln!("{}", serde_json::to_string_pretty(&health)?);
    } else {
        let reached = format!("at {}", conn.host().address);
        super::out::write(&render::health_panel(
            &health,
            &reached,
            &render::Style::stdout(),
        ));
    }
    Ok(render::status_exit_code(&health.status))
}

/// `client reply`: answers a permission request.
async fn reply_command(
    mut conn: HostSession,
    request_id: &str,
    decision: &str,
) -> anyhow::Result<ExitCode> {
    let _: Value = conn
        .call(
            "permission.reply",
            json!({"requestId": request_id, "decision": decision}),
        )
        .await
        .map_err(|e| session_error(e, &conn.host().name))?;
    outln!("Answered {request_id}: {decision}.");
    Ok(ExitCode::SUCCESS)
}

/// `client hosts`: the paired hosts.
fn hosts_command(hosts: &KnownHosts) -> anyhow::Result<ExitCode> {
    if hosts.all().is_empty() {
        outln!("Not paired with any host. Pair with `openwork-host client pair ADDR --code CODE`.");
        return Ok(ExitCode::SUCCESS);
    }
    outln!("{:<20} {:<24} {:<20} SCOPES", "NAME", "ADDRESS", "DEVICE");
    for h in hosts.all() {
        let scopes = Scope::join(&h.scopes, ",");
        outln!(
            "{:<20} {:<24} {:<20} {scopes}",
            h.name,
            h.address,
            h.device_id
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `client forget`: forgets a paired host.
fn forget_command(hosts: &mut KnownHosts, host: &str) -> anyhow::Result<ExitCode> {
    if !hosts.remove(host) {
        bail!("no paired host is called `{host}`");
    }
    hosts.save()?;
    outln!("Forgot {host}.");
    Ok(ExitCode::SUCCESS)
}

fn strip_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            Value::Object(map.into_iter().filter(|(_, v)| !v.is_null()).collect())
        }
        other => other,
    }
}

fn write_chunk(chunk: &LogChunk) {
    let bytes = chunk_bytes(chunk);
    match chunk.stream {
        openwork_host::protocol::LogStream::Stderr => {
            let mut err = std::io::stderr().lock();
            // A closed stderr loses the task's stderr only; it goes on.
            let _ = err.write_all(&bytes).and_then(|()| err.flush());
        }
        // A closed stdout (`| head`) ends the output quietly.
        _ => super::out::write_bytes(&bytes),
    }
}

/// How following a task ended.
enum Streamed {
    /// With its final status.
    Ended(TaskUpdate),
    /// With Ctrl-C: `run` cancelled the task, `logs --follow` stopped following.
    Interrupted,
}

/// What to do when the task asks for permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prompts {
    /// Ask the person at this terminal.
    Ask,
    /// Reject at once (`--deny-sensitive`).
    Reject,
    /// Show the request and wait for an answer from elsewhere.
    Wait,
}

/// Prints a task's output until its final status, answering permission
/// requests as `prompts` says; Ctrl-C cancels the task (when
/// `cancel_on_interrupt`) or stops following. Drops are bridged by the session.
async fn stream_task(
    conn: &mut HostSession,
    task_id: &str,
    cancel_on_interrupt: bool,
    prompts: Prompts,
) -> anyhow::Result<Streamed> {
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut cancelling = false;
    let host = conn.host().name.clone();
    let mut lines = (prompts == Prompts::Ask).then(render::stdin_lines);
    // A task may ask again (or a request be sent again after a reconnect)
    // while a prompt is open: they are asked in turn, each once.
    let mut queue = PromptQueue::default();
    // Without a prompt, each request is still shown (or rejected) once.
    let mut handled = std::collections::HashSet::new();
    loop {
        let notice = tokio::select! {
            notice = conn.next_notice() => notice.map_err(|e| session_error(e, &host))?,
            _ = interrupt.recv() => {
                if !cancel_on_interrupt {
                    eprintln!("\nStopped following; task {task_id} goes on (`openwork-host client logs {task_id} --follow` follows it again).");
                    return Ok(Streamed::Interrupted);
                }
                if cancelling {
                    eprintln!("\nStopped waiting; task {task_id} is being cancelled.");
                    return Ok(Streamed::Interrupted);
                }
                eprintln!("\nCancelling the task… (Ctrl-C again stops waiting)");
                cancelling = true;
                let _ = conn.notify("task.cancel", json!({"taskId": task_id})).await;
                continue;
            }
            line = async { lines.as_mut()?.recv().await }, if queue.current().is_some() && lines.is_some() => {
                let Some(request) = queue.current().cloned() else { continue };
                let decision = match line.as_deref().map(str::trim) {
                    Some("o" | "once" | "y" | "yes") => "once",
                    Some("a" | "always") if request.options.contains(&Decision::Always) => "always",
                    None => "reject",
                    Some("r" | "reject" | "n" | "no" | "") => "reject",
                    Some(other) => {
                        eprint!("`{other}`? Answer o (once), a (always) or r (reject): ");
                        continue;
                    }
                };
                answer(conn, &request.request_id, decision).await;
                if queue.finish(&request.request_id)
                    && let Some(next) = queue.current()
                {
                    ask_at_terminal(next, queue.behind());
                }
                continue;
            }
        };
        match notice {
            Notice::Chunk(chunk) if chunk.task_id == task_id => write_chunk(&chunk),
            Notice::PermissionRequest(request) if request.task_id == task_id => match prompts {
                Prompts::Reject | Prompts::Wait if !handled.insert(request.request_id.clone()) => {}
                Prompts::Reject => {
                    show_request(&request);
                    eprintln!("Rejected (--deny-sensitive).");
                    answer(conn, &request.request_id, "reject").await;
                }
                Prompts::Wait => {
                    show_request(&request);
                    eprintln!(
                        "Waiting for an answer (`openwork-host client reply {} once|always|reject`, or another device); it expires at {}.",
                        request.request_id, request.expires_at
                    );
                }
                Prompts::Ask => {
                    if queue.offer(request) {
                        if let Some(current) = queue.current() {
                            ask_at_terminal(current, 0);
                        }
                    } else if queue.behind() > 0 {
                        eprintln!(
                            "\n(Another permission request waits: {} in all; they are asked in turn.)",
                            queue.behind() + 1
                        );
                    }
                }
            },
            Notice::PermissionResolved(resolved) if resolved.task_id == task_id => {
                let listed = queue.contains(&resolved.request_id);
                let next = queue.finish(&resolved.request_id);
                if listed || prompts != Prompts::Ask {
                    eprintln!(
                        "\nPermission answered: {} by {}.",
                        resolved.decision.as_str(),
                        resolved.by
                    );
                }
                if next && let Some(next) = queue.current() {
                    ask_at_terminal(next, queue.behind());
                }
            }
            Notice::Updated(update) if update.task_id == task_id && update.status.is_final() => {
                if let Some(error) = &update.error
                    && update.exit_code.is_none_or(|c| c != 0)
                {
                    eprintln!(
                        "openwork-host: task {task_id} {}: {error}",
                        update.status.as_str()
                    );
                }
                if cancelling {
                    return Ok(Streamed::Interrupted);
                }
                return Ok(Streamed::Ended(update));
            }
            _ => {}
        }
    }
}

fn show_request(request: &PermissionRequest) {
    eprintln!("\nThe task asks for permission: {}", request.summary);
    eprintln!("{}", request.detail.trim_end());
    if let Some(always) = &request.always {
        eprintln!("  \"always\" would allow: {always}");
    }
}

/// Shows a request and its prompt; `behind` more wait after it.
fn ask_at_terminal(request: &PermissionRequest, behind: usize) {
    show_request(request);
    if behind > 0 {
        eprintln!("({behind} more after this one.)");
    }
    let always = if request.options.contains(&Decision::Always) {
        ", a (always)"
    } else {
        ""
    };
    eprint!("Allow it? o (once){always}, r (reject): ");
}

async fn answer(conn: &mut HostSession, request_id: &str, decision: &str) {
    let reply = conn
        .call::<Value>(
            "permission.reply",
            json!({"requestId": request_id, "decision": decision}),
        )
        .await;
    match reply {
        Ok(_) => eprintln!("Answered: {decision}."),
        Err(e) => {
            let host = conn.host().name.clone();
            eprintln!("Could not answer: {}", session_error(e, &host));
        }
    }
}

/// The exit code a shell would give: the task's own, 128 + signal, 127 for
/// a missing program, 1 otherwise.
fn exit_code(update: &TaskUpdate) -> ExitCode {
    if let Some(code) = update.exit_code {
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    if let Some(signal) = &update.signal
        && let Ok(signal) = signal.parse::<nix::sys::signal::Signal>()
    {
        return ExitCode::from(128 + signal as u8);
    }
    if update
        .error
        .as_deref()
        .is_some_and(|e| e.contains("command not found"))
    {
        return ExitCode::from(127);
    }
    ExitCode::FAILURE
}

fn print_task(t: &TaskRecord) {
    let what = t
        .title
        .clone()
        .or_else(|| t.command.clone())
        .or_else(|| t.argv.as_ref().map(|a| a.join(" ")))
        .unwrap_or_default();
    let exit = t.exit_code.map(|c| c.to_string()).unwrap_or_default();
    outln!(
        "{:<20} {:<12} {:<5} {:<25} {what}",
        t.task_id,
        t.status.as_str(),
        exit,
        t.created_at
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_told_from_names_to_look_for() {
        for address in [
            "10.0.0.2",
            "10.0.0.2:4747",
            "[::1]:4747",
            "fe80::1%eth0",
            "desk.lan:4747",
        ] {
            assert!(is_address(address), "{address}");
        }
        for name in ["Ada's Desk", "desk", "desk.lan", "Café Lab.2"] {
            assert!(!is_address(name), "{name}");
        }
    }
}
