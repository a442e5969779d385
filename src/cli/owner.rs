//! The owner's commands, over the local socket: `status`, `doctor`, `pair`, `devices`, `permissions`.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::out::{out, outln};
use super::render;
use openwork_host::auth::Scope;
use openwork_host::client::{ClientError, connect_unix};
use openwork_host::datadir::DataDir;
use openwork_host::health;
use openwork_host::protocol::{CheckSeverity, HealthCheck};
use openwork_host::protocol::{
    DeviceInfo, DeviceRevokeResult, DevicesListResult, HealthReport, PairingRequest, PairingStatus,
    PairingWindow, PairingWithdrawn,
};
use openwork_host::protocol::{PermissionAuditResult, PermissionRulesResult};

type Local = openwork_host::client::Connection<
    tokio::io::ReadHalf<tokio::net::UnixStream>,
    tokio::io::WriteHalf<tokio::net::UnixStream>,
>;

/// Connects to the running host's local socket, or says how to start it.
pub async fn connect(data_dir: &DataDir) -> anyhow::Result<Local> {
    let socket = data_dir.socket();
    connect_unix(&socket).await.map_err(|e| {
        anyhow::anyhow!(
            "the host is not running on {} (cannot connect to {}: {e}); start it with `openwork-host serve --data-dir {}`",
            data_dir.root().display(),
            socket.display(),
            data_dir.root().display()
        )
    })
}

fn rpc_error(e: ClientError) -> anyhow::Error {
    match e {
        ClientError::Rpc(rpc) => anyhow::anyhow!("{}", render::rpc_message(&rpc)),
        other => anyhow::anyhow!(other),
    }
}

/// `openwork-host status`: the health panel; exit 0 ok, 1 degraded, 2 error, 3 not running.
pub async fn status(data_dir: &DataDir, json_out: bool) -> anyhow::Result<ExitCode> {
    let mut conn = match connect_unix(&data_dir.socket()).await {
        Ok(conn) => conn,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return forbidden(data_dir, &e, json_out);
        }
        Err(e) => {
            let down = health::daemon_down(data_dir, &unreachable(data_dir, &e));
            if json_out {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "status": "stopped",
                        "dataDir": data_dir.root().display().to_string(),
                        "message": down.message,
                        "action": down.action,
                    }))?
                );
            } else {
                let style = render::Style::stdout();
                outln!("openwork-host: {}", style.red(&down.message));
                outln!(
                    "  {} {}",
                    style.bold("fix:"),
                    down.action.unwrap_or_default()
                );
                outln!("  `openwork-host doctor` checks what it can without the host.");
            }
            return Ok(ExitCode::from(3));
        }
    };
    let health: HealthReport = conn
        .call("health.get", json!({}))
        .await
        .map_err(rpc_error)?;
    if json_out {
        outln!("{}", serde_json::to_string_pretty(&health)?);
    } else {
        out!(
            "{}",
            render::health_panel(&health, "running", &render::Style::stdout())
        );
    }
    Ok(render::status_exit_code(&health.status))
}

/// `status` when the socket is there but this user may not connect (the
/// host runs as someone else): not "not running", which may be false; exit 2.
fn forbidden(data_dir: &DataDir, e: &std::io::Error, json_out: bool) -> anyhow::Result<ExitCode> {
    use std::os::unix::fs::MetadataExt;
    let root = data_dir.root().display();
    let owner = std::fs::metadata(data_dir.root())
        .ok()
        .map(|m| m.uid())
        .filter(|&uid| uid != nix::unistd::geteuid().as_raw());
    let me = openwork_host::datadir::user_name(nix::unistd::geteuid().as_raw());
    let (message, action) = match owner {
        Some(uid) => {
            let shown = openwork_host::datadir::user_name(uid);
            let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .map_or_else(|| format!("#{uid}"), |u| u.name);
            (
                format!(
                    "cannot tell whether a host is running on {root}: you ({me}) may not connect to {} ({e}); the data dir belongs to {shown}, and only its owner may use a host's socket",
                    data_dir.socket().display(),
                ),
                format!(
                    "run the command as that user, e.g. `sudo -u {name} openwork-host status --data-dir {root}`, or pass the --data-dir of a host of your own"
                ),
            )
        }
        None => (
            format!(
                "cannot tell whether a host is running on {root}: you ({me}) may not connect to {} ({e}); it or a directory above it belongs to another user",
                data_dir.socket().display(),
            ),
            format!(
                "run the command as the user the host runs as (the owner of {root}), or pass the --data-dir of a host of your own"
            ),
        ),
    };
    if json_out {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "status": "unknown",
                "dataDir": data_dir.root().display().to_string(),
                "message": message,
                "action": action,
            }))?
        );
    } else {
        let style = render::Style::stdout();
        outln!("openwork-host: {}", style.red(&message));
        outln!("  {} {action}", style.bold("fix:"));
    }
    Ok(ExitCode::from(2))
}

fn unreachable(data_dir: &DataDir, e: &std::io::Error) -> String {
    format!(
        "nothing answers on {}: {}",
        data_dir.socket().display(),
        e.kind()
    )
}

/// `openwork-host doctor`: every check, with the fix for each failing one;
/// exit 0 when all pass, 1 otherwise.
pub async fn doctor(data_dir: &DataDir, json_out: bool) -> anyhow::Result<ExitCode> {
    let (config_check, _) = health::config(data_dir);
    let mut checks = Vec::new();
    match connect_unix(&data_dir.socket()).await {
        Ok(mut conn) => {
            let report: HealthReport = conn
                .call("health.get", json!({}))
                .await
                .map_err(rpc_error)?;
            checks.push(HealthCheck::pass(
                health::DAEMON,
                CheckSeverity::Error,
                format!(
                    "running: openwork-host {}, up {}",
                    report.version,
                    render::duration(report.uptime_s)
                ),
            ));
            checks.push(health::data_dir(data_dir));
            // The file as it is now: an edit since the host started shows here first.
            checks.push(config_check);
            checks.extend(report.checks.unwrap_or_default());
        }
        Err(e) => {
            checks.push(health::daemon_down(data_dir, &unreachable(data_dir, &e)));
            checks.extend(health::offline(data_dir));
        }
    }
    let overall = health::overall(&checks);
    if json_out {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "status": overall,
                "dataDir": data_dir.root().display().to_string(),
                "checks": checks,
            }))?
        );
    } else {
        let style = render::Style::stdout();
        outln!(
            "{}",
            style.bold(&format!(
                "openwork-host doctor: {}",
                data_dir.root().display()
            ))
        );
        outln!();
        out!("{}", render::check_lines(&checks, &style));
        outln!();
        let failing: Vec<&HealthCheck> = checks.iter().filter(|c| !c.ok).collect();
        if failing.is_empty() {
            outln!("{}", style.green("Every check passes."));
        } else {
            let errors = failing
                .iter()
                .filter(|c| c.severity == CheckSeverity::Error)
                .count();
            outln!(
                "{}",
                style.as_status(
                    overall,
                    &format!(
                        "{} problem(s): {errors} error(s), {} warning(s); each has its fix above.",
                        failing.len(),
                        failing.len() - errors
                    )
                )
            );
        }
    }
    Ok(if checks.iter().all(|c| c.ok) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `openwork-host pair` options.
#[derive(Debug, Args)]
pub struct PairArgs {
    /// How long the code is valid, in seconds: 1 to 3600 (default 300).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3600))]
    ttl: Option<u64>,
    /// Scopes a device may get, comma-separated (default: all but admin).
    #[arg(long)]
    scopes: Option<String>,
    /// The address to put in the QR code (default: this machine's LAN address).
    #[arg(long)]
    address: Option<String>,
    /// Open the window, print it and exit; approve with `openwork-host devices approve ID`.
    #[arg(long)]
    detach: bool,
    /// Print the window as JSON (for scripts).
    #[arg(long)]
    json: bool,
    /// Do not ask for approval here even on a terminal; print how to approve instead.
    #[arg(long)]
    no_prompt: bool,
    /// Close a pairing window that is already open (its code stops working) and open a new one.
    #[arg(long)]
    replace: bool,
}

/// `openwork-host pair`.
pub async fn pair(data_dir: &DataDir, args: PairArgs) -> anyhow::Result<ExitCode> {
    let mut conn = connect(data_dir).await?;
    let scopes = args
        .scopes
        .as_deref()
        .map(render::parse_scopes)
        .transpose()?;
    let window: PairingWindow = conn
        .call(
            "pairing.open",
            json!({
                "ttlS": args.ttl,
                "scopes": scopes,
                "address": args.address,
                "replace": args.replace.then_some(true),
            }),
        )
        .await
        .map_err(rpc_error)?;
    if args.json {
        outln!("{}", serde_json::to_string(&window)?);
    } else {
        print_window(&window);
    }
    if args.detach {
        return Ok(ExitCode::SUCCESS);
    }
    let interactive = !args.no_prompt && std::io::stdin().is_terminal();
    let mut answers = interactive.then(render::stdin_lines);
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    // The request being asked about at the prompt, if any: a notice that it
    // was withdrawn ends the question.
    let mut asking: Option<PairingRequest> = None;
    loop {
        let next_answer = async {
            match (asking.is_some(), answers.as_mut()) {
                (true, Some(lines)) => lines.recv().await,
                _ => std::future::pending().await,
            }
        };
        let note = tokio::select! {
            note = conn.next_notification() => note.context("the host closed the connection")?,
            answer = next_answer => {
                let Some(request) = asking.take() else { continue };
                let answer = answer.unwrap_or_default();
                let approve = answer.trim().eq_ignore_ascii_case("y")
                    || answer.trim().eq_ignore_ascii_case("yes");
                let method = if approve { "pairing.approve" } else { "pairing.deny" };
                let answered: Result<Value, ClientError> = conn
                    .call(method, json!({"requestId": request.request_id}))
                    .await;
                if let Err(e) = answered {
                    // The device may have left just now: the window stays
                    // open for its next try, so keep waiting.
                    eprintln!("{:#}", rpc_error(e));
                    eprintln!("Still waiting for a device.");
                }
                continue;
            }
            _ = interrupt.recv() => {
                let _: Value = conn.call("pairing.close", json!({})).await.map_err(rpc_error)?;
                eprintln!("\nPairing window closed.");
                return Ok(ExitCode::from(130));
            }
        };
        let params = note["params"].clone();
        match note["method"].as_str() {
            Some("pairing.requested") => {
                let request: PairingRequest = serde_json::from_value(params)?;
                print_request(&request);
                match answers.as_ref() {
                    Some(_) => {
                        eprint!("Approve this device? [y/N] ");
                        asking = Some(request);
                    }
                    None => eprintln!(
                        "Approve it with `openwork-host devices approve {0}`, or refuse with `openwork-host devices deny {0}`.",
                        request.request_id
                    ),
                }
            }
            Some("pairing.withdrawn") => {
                let withdrawn: PairingWithdrawn = serde_json::from_value(params)?;
                if asking
                    .as_ref()
                    .is_some_and(|r| r.request_id == withdrawn.request_id)
                {
                    asking = None;
                    eprintln!();
                }
                eprintln!(
                    "Device \"{}\" from {} is no longer waiting ({}); its request {} is withdrawn and it was not paired.",
                    openwork_host::pairing::escape_hidden(&withdrawn.device_name),
                    withdrawn.address,
                    withdrawn.reason,
                    withdrawn.request_id
                );
                if withdrawn.window_open {
                    eprintln!(
                        "The window is still open: the device can try again with the same code."
                    );
                }
            }
            Some("pairing.failed") => {
                let failures = params["failures"].as_u64().unwrap_or(0);
                let remaining = params["remaining"].as_u64().unwrap_or(0);
                eprintln!(
                    "A wrong code was tried from {} ({} wrong so far, {} left).",
                    params["address"].as_str().unwrap_or("?"),
                    failures,
                    render::count(remaining, "try", "tries")
                );
            }
            Some("pairing.closed") => {
                let reason = params["reason"].as_str().unwrap_or("closed");
                if reason == "paired" {
                    eprintln!(
                        "Paired: device {}.",
                        params["deviceId"].as_str().unwrap_or("?")
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                eprintln!("{}", closed_explained(reason));
                return Ok(ExitCode::FAILURE);
            }
            _ => {}
        }
    }
}

/// What the owner reads when the window closes without a pairing.
fn closed_explained(reason: &str) -> String {
    match reason {
        "too many wrong codes" => "The pairing window closed: too many wrong codes were tried, so its code no longer works. Run `openwork-host pair` again for a new code.".into(),
        "expired" => "The pairing window closed: its code expired before a device used it. Run `openwork-host pair` again for a new code.".into(),
        "replaced by a new window" => "The pairing window closed: another `openwork-host pair --replace` opened a new one; its code is the one that works now.".into(),
        other => format!("The pairing window closed: {other}."),
    }
}

fn print_window(window: &PairingWindow) {
    outln!("Pairing is open until {}.", window.expires_at);
    outln!();
    outln!("  Code:         {}", render::grouped(&window.code, 4));
    outln!("  Host:         {}:{}", window.host, window.port);
    outln!("  Host name:    {}", window.host_name);
    outln!(
        "  Fingerprint:  {}",
        render::grouped(&window.fingerprint, 4)
    );
    outln!("  A device may get:");
    outln!("{}", render::scope_lines(&window.scopes));
    outln!();
    outln!(
        "On the device: openwork-host client pair {}:{} --code {}",
        window.host,
        window.port,
        window.code
    );
    let web = openwork_host::client::pair::PairLink::web_url(
        &window.host,
        window.port,
        &window.code,
        &window.fingerprint,
        &window.host_id,
    );
    outln!("or scan with the device's camera (opens pairing in its browser):");
    if let Some(qr) = render::qr(&web) {
        outln!("{qr}");
    }
    outln!("  {web}");
    outln!("(the native client takes it too: openwork-host client pair --uri '{web}')");
    outln!();
}

fn print_request(request: &PairingRequest) {
    eprint!("\n{}", request_text(request));
}

/// A device waiting for approval: who, from where, with what, and its id.
fn request_text(request: &PairingRequest) -> String {
    let mut text = format!(
        "Device \"{}\" from {} asks to pair, with:\n",
        openwork_host::pairing::escape_hidden(&request.device_name),
        request.address
    );
    for scope in &request.scopes {
        text.push_str(&format!(
            "      {:<18} {}\n",
            scope.scope.as_str(),
            scope.description
        ));
    }
    text.push_str(&format!("  request id: {}\n", request.request_id));
    text
}

/// `openwork-host devices …`.
#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// List paired devices.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Devices waiting for approval.
    Pending {
        #[arg(long)]
        json: bool,
    },
    /// Approve a waiting device.
    Approve {
        request_id: String,
        /// Grant fewer scopes than asked, comma-separated.
        #[arg(long)]
        scopes: Option<String>,
    },
    /// Refuse a waiting device.
    Deny { request_id: String },
    /// Revoke a device: its connections close at once and its credential stops working.
    Revoke { device_id: String },
}

/// `openwork-host devices …`.
pub async fn devices(data_dir: &DataDir, command: DevicesCommand) -> anyhow::Result<ExitCode> {
    let mut conn = connect(data_dir).await?;
    match command {
        DevicesCommand::List { json: json_out } => {
            let list: DevicesListResult = conn
                .call("devices.list", json!({}))
                .await
                .map_err(rpc_error)?;
            if json_out {
                outln!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.devices.is_empty() {
                outln!("No paired devices. Pair one with `openwork-host pair`.");
            } else {
                outln!(
                    "{:<20} {:<20} {:<10} {:<6} SCOPES",
                    "DEVICE",
                    "NAME",
                    "STATE",
                    "CONN"
                );
                for d in &list.devices {
                    print_device(d);
                }
            }
        }
        DevicesCommand::Pending { json: json_out } => {
            let status: PairingStatus = conn
                .call("pairing.status", json!({}))
                .await
                .map_err(rpc_error)?;
            if json_out {
                outln!("{}", serde_json::to_string_pretty(&status)?);
            } else if status.pending.is_empty() {
                let window = if status.open {
                    "a pairing window is open"
                } else {
                    "no pairing window is open"
                };
                outln!("No device is waiting for approval ({window}).");
            } else {
                let texts: Vec<String> = status.pending.iter().map(request_text).collect();
                out!("{}", texts.join("\n"));
            }
        }
        DevicesCommand::Approve { request_id, scopes } => {
            let scopes = scopes.as_deref().map(render::parse_scopes).transpose()?;
            let device: DeviceInfo = conn
                .call(
                    "pairing.approve",
                    json!({"requestId": request_id, "scopes": scopes}),
                )
                .await
                .map_err(rpc_error)?;
            outln!("Approved \"{}\" as {}.", device.name, device.device_id);
        }
        DevicesCommand::Deny { request_id } => {
            let _: Value = conn
                .call("pairing.deny", json!({"requestId": request_id}))
                .await
                .map_err(rpc_error)?;
            outln!("Refused. The pairing window is closed.");
        }
        DevicesCommand::Revoke { device_id } => {
            let result: DeviceRevokeResult = conn
                .call("devices.revoke", json!({"deviceId": device_id}))
                .await
                .map_err(rpc_error)?;
            outln!(
                "Revoked {}; {} live connection(s) closed.",
                result.device_id,
                result.closed_connections
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_device(d: &DeviceInfo) {
    let state = if d.revoked_at.is_some() {
        "revoked"
    } else {
        "paired"
    };
    let scopes = Scope::join(&d.scopes, ",");
    outln!(
        "{:<20} {:<20} {:<10} {:<6} {scopes}",
        d.device_id,
        openwork_host::pairing::escape_hidden(&d.name),
        state,
        d.connections
    );
}

/// `openwork-host permissions …`.
#[derive(Debug, Subcommand)]
pub enum PermissionsCommand {
    /// Remembered "always" rules.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Forget a remembered rule: the next such action asks again.
    Forget { rule_id: String },
    /// Every permission request and decision, newest first.
    Audit {
        /// Only this task's.
        #[arg(long)]
        task: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
}

/// `openwork-host permissions …`.
pub async fn permissions(
    data_dir: &DataDir,
    command: PermissionsCommand,
) -> anyhow::Result<ExitCode> {
    let mut conn = connect(data_dir).await?;
    match command {
        PermissionsCommand::List { json: json_out } => {
            let rules: PermissionRulesResult = conn
                .call("permission.rules", json!({}))
                .await
                .map_err(rpc_error)?;
            if json_out {
                outln!("{}", serde_json::to_string_pretty(&rules)?);
            } else if rules.rules.is_empty() {
                outln!("No remembered rules: every sensitive action asks.");
            } else {
                for rule in &rules.rules {
                    outln!("{}  {}", rule.rule_id, rule.description);
                    outln!(
                        "      remembered {} by {}",
                        rule.created_at,
                        rule.created_by
                    );
                }
            }
        }
        PermissionsCommand::Forget { rule_id } => {
            let _: Value = conn
                .call("permission.forget", json!({"ruleId": rule_id}))
                .await
                .map_err(rpc_error)?;
            outln!("Forgot {rule_id}: the next such action asks again.");
        }
        PermissionsCommand::Audit {
            task,
            limit,
            json: json_out,
        } => {
            let audit: PermissionAuditResult = conn
                .call("permission.audit", json!({"taskId": task, "limit": limit}))
                .await
                .map_err(rpc_error)?;
            if json_out {
                outln!("{}", serde_json::to_string_pretty(&audit)?);
            } else {
                for e in &audit.entries {
                    let who = e.actor.as_deref().unwrap_or("");
                    outln!(
                        "{}  {:<20} {:<16} {:<14} {}",
                        e.at,
                        e.task_id,
                        e.event,
                        who,
                        e.summary
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
