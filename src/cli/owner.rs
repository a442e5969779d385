//! The owner's commands, over the local socket: `status`, `doctor`, `pair`, `devices`, `permissions`.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::render;
use openwork_host::auth::Scope;
use openwork_host::client::{ClientError, connect_unix};
use openwork_host::datadir::DataDir;
use openwork_host::health;
use openwork_host::protocol::{CheckSeverity, HealthCheck};
use openwork_host::protocol::{
    DeviceInfo, DeviceRevokeResult, DevicesListResult, HealthReport, PairingRequest, PairingStatus,
    PairingWindow,
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
        ClientError::Rpc(rpc) => match rpc.action() {
            Some(action) => anyhow::anyhow!("{} ({action})", rpc.message),
            None => anyhow::anyhow!("{}", rpc.message),
        },
        other => anyhow::anyhow!(other),
    }
}

/// `openwork-host status`: the health panel; exit 0 ok, 1 degraded, 2 error, 3 not running.
pub async fn status(data_dir: &DataDir, json_out: bool) -> anyhow::Result<ExitCode> {
    let mut conn = match connect_unix(&data_dir.socket()).await {
        Ok(conn) => conn,
        Err(e) => {
            let down = health::daemon_down(data_dir, &unreachable(data_dir, &e));
            if json_out {
                println!(
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
                println!("openwork-host: {}", style.red(&down.message));
                println!(
                    "  {} {}",
                    style.bold("fix:"),
                    down.action.unwrap_or_default()
                );
                println!("  `openwork-host doctor` checks what it can without the host.");
            }
            return Ok(ExitCode::from(3));
        }
    };
    let health: HealthReport = conn
        .call("health.get", json!({}))
        .await
        .map_err(rpc_error)?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&health)?);
    } else {
        print!(
            "{}",
            render::health_panel(&health, "running", &render::Style::stdout())
        );
    }
    Ok(render::status_exit_code(&health.status))
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
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "status": overall,
                "dataDir": data_dir.root().display().to_string(),
                "checks": checks,
            }))?
        );
    } else {
        let style = render::Style::stdout();
        println!(
            "{}",
            style.bold(&format!(
                "openwork-host doctor: {}",
                data_dir.root().display()
            ))
        );
        println!();
        print!("{}", render::check_lines(&checks, &style));
        println!();
        let failing: Vec<&HealthCheck> = checks.iter().filter(|c| !c.ok).collect();
        if failing.is_empty() {
            println!("{}", style.green("Every check passes."));
        } else {
            let errors = failing
                .iter()
                .filter(|c| c.severity == CheckSeverity::Error)
                .count();
            println!(
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
    /// How long the code is valid, in seconds (default 300).
    #[arg(long)]
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
            json!({"ttlS": args.ttl, "scopes": scopes, "address": args.address}),
        )
        .await
        .map_err(rpc_error)?;
    if args.json {
        println!("{}", serde_json::to_string(&window)?);
    } else {
        print_window(&window);
    }
    if args.detach {
        return Ok(ExitCode::SUCCESS);
    }
    let interactive = !args.no_prompt && std::io::stdin().is_terminal();
    let mut answers = interactive.then(render::stdin_lines);
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    loop {
        let note = tokio::select! {
            note = conn.next_notification() => note.context("the host closed the connection")?,
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
                match answers.as_mut() {
                    Some(lines) => {
                        eprint!("Approve this device? [y/N] ");
                        let answer = lines.recv().await.unwrap_or_default();
                        let method = if answer.trim().eq_ignore_ascii_case("y")
                            || answer.trim().eq_ignore_ascii_case("yes")
                        {
                            "pairing.approve"
                        } else {
                            "pairing.deny"
                        };
                        let _: Value = conn
                            .call(method, json!({"requestId": request.request_id}))
                            .await
                            .map_err(rpc_error)?;
                    }
                    None => eprintln!(
                        "Approve it with `openwork-host devices approve {0}`, or refuse with `openwork-host devices deny {0}`.",
                        request.request_id
                    ),
                }
            }
            Some("pairing.failed") => {
                let failures = params["failures"].as_u64().unwrap_or(0);
                let remaining = params["remaining"].as_u64().unwrap_or(0);
                eprintln!(
                    "A wrong code was tried from {} ({} wrong so far, {remaining} tries left).",
                    params["address"].as_str().unwrap_or("?"),
                    failures
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
                eprintln!("The pairing window closed: {reason}.");
                return Ok(ExitCode::FAILURE);
            }
            _ => {}
        }
    }
}

fn print_window(window: &PairingWindow) {
    println!("Pairing is open until {}.", window.expires_at);
    println!();
    println!("  Code:         {}", render::grouped(&window.code, 4));
    println!("  Host:         {}:{}", window.host, window.port);
    println!("  Host name:    {}", window.host_name);
    println!(
        "  Fingerprint:  {}",
        render::grouped(&window.fingerprint, 4)
    );
    println!("  A device may get:");
    println!("{}", render::scope_lines(&window.scopes));
    println!();
    println!(
        "On the device: openwork-host client pair {}:{} --code {}",
        window.host, window.port, window.code
    );
    let web = openwork_host::client::pair::PairLink::web_url(
        &window.host,
        window.port,
        &window.code,
        &window.fingerprint,
        &window.host_id,
    );
    println!("or scan with the device's camera (opens pairing in its browser):");
    if let Some(qr) = render::qr(&web) {
        println!("{qr}");
    }
    println!("  {web}");
    println!("(the native client takes it too: openwork-host client pair --uri '{web}')");
    println!();
}

fn print_request(request: &PairingRequest) {
    eprintln!();
    eprintln!(
        "Device \"{}\" from {} asks to pair, with:",
        request.device_name, request.address
    );
    for scope in &request.scopes {
        eprintln!("      {:<18} {}", scope.scope.as_str(), scope.description);
    }
    eprintln!("  request id: {}", request.request_id);
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
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.devices.is_empty() {
                println!("No paired devices. Pair one with `openwork-host pair`.");
            } else {
                println!(
                    "{:<20} {:<20} {:<10} {:<6} SCOPES",
                    "DEVICE", "NAME", "STATE", "CONN"
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
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else if status.pending.is_empty() {
                let window = if status.open {
                    "a pairing window is open"
                } else {
                    "no pairing window is open"
                };
                println!("No device is waiting for approval ({window}).");
            } else {
                for request in &status.pending {
                    print_request(request);
                }
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
            println!("Approved \"{}\" as {}.", device.name, device.device_id);
        }
        DevicesCommand::Deny { request_id } => {
            let _: Value = conn
                .call("pairing.deny", json!({"requestId": request_id}))
                .await
                .map_err(rpc_error)?;
            println!("Refused. The pairing window is closed.");
        }
        DevicesCommand::Revoke { device_id } => {
            let result: DeviceRevokeResult = conn
                .call("devices.revoke", json!({"deviceId": device_id}))
                .await
                .map_err(rpc_error)?;
            println!(
                "Revoked {}; {} live connection(s) closed.",
                result.device_id, result.closed_connections
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
    println!(
        "{:<20} {:<20} {:<10} {:<6} {scopes}",
        d.device_id, d.name, state, d.connections
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
                println!("{}", serde_json::to_string_pretty(&rules)?);
            } else if rules.rules.is_empty() {
                println!("No remembered rules: every sensitive action asks.");
            } else {
                for rule in &rules.rules {
                    println!("{}  {}", rule.rule_id, rule.description);
                    println!(
                        "      remembered {} by {}",
                        rule.created_at, rule.created_by
                    );
                }
            }
        }
        PermissionsCommand::Forget { rule_id } => {
            let _: Value = conn
                .call("permission.forget", json!({"ruleId": rule_id}))
                .await
                .map_err(rpc_error)?;
            println!("Forgot {rule_id}: the next such action asks again.");
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
                println!("{}", serde_json::to_string_pretty(&audit)?);
            } else {
                for e in &audit.entries {
                    let who = e.actor.as_deref().unwrap_or("");
                    println!(
                        "{}  {:<20} {:<16} {:<14} {}",
                        e.at, e.task_id, e.event, who, e.summary
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
