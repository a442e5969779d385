//! The `openwork-host` command line.

mod cli;
mod logging;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use openwork_host::bridge::BridgeEnd;
use openwork_host::datadir::DataDir;
use openwork_host::session::{EndReason, SessionOptions};
use openwork_host::transport::{self, unix};
use openwork_host::{Host, Mdns};

/// A host for remote agent work: runs tasks for paired devices and local
/// scripts, streams their output, and keeps their history.
#[derive(Parser)]
#[command(name = "openwork-host", version)]
struct Cli {
    /// The data dir: store, config.toml, keys and the local socket.
    /// Default: the platform's data dir (~/.local/share/openwork-host on Linux).
    #[arg(long, global = true, env = "OPENWORK_HOST_DIR")]
    data_dir: Option<PathBuf>,

    /// Log filter for stderr, e.g. `info` or `openwork_host=debug` (RUST_LOG wins when set).
    #[arg(long, global = true)]
    log: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the host daemon: the local socket, and TLS for paired devices.
    Serve {
        /// Where to listen for devices (TLS), repeatable; `none` for no network
        /// listener. Default: [::]:4747 (IPv6 and IPv4), or config.toml's network.listen.
        #[arg(long = "listen", value_name = "ADDR:PORT")]
        listen: Vec<String>,
        /// Do not advertise the host on the LAN with mDNS.
        #[arg(long)]
        no_mdns: bool,
    },
    /// The health panel: whether the host runs, where it listens, runtimes,
    /// pairing, tasks and every check. Exit status: 0 ok, 1 degraded, 2 error, 3 not running.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Run every health check and print the fix for each failing one; works
    /// with the host down too (data dir, config, store, disk, runtimes).
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// Open a pairing window: show a code and QR code, then approve the device.
    Pair(cli::owner::PairArgs),
    /// Open the owner's console in a browser on this machine: a one-time
    /// link (single use, short-lived) that enrols the browser as your device.
    Ui(cli::ui::UiArgs),
    /// Manage paired devices and pairing requests.
    #[command(subcommand)]
    Devices(cli::owner::DevicesCommand),
    /// Remembered permission rules and the audit trail.
    #[command(subcommand)]
    Permissions(cli::owner::PermissionsCommand),
    /// Use a host from this device: pair, run tasks, read logs.
    Client {
        /// Where paired hosts are kept (default: ~/.config/openwork-host).
        #[arg(long, env = "OPENWORK_CLIENT_DIR")]
        client_dir: Option<PathBuf>,
        #[command(subcommand)]
        command: cli::client::ClientCommand,
    },
    /// Keep the host running: start it at login (and, with lingering, at
    /// boot) and restart it when it fails, as a systemd user service (Linux)
    /// or a launchd agent (macOS).
    #[command(subcommand)]
    Service(cli::service::ServiceCommand),
    /// Speak JSON-RPC on stdin/stdout: through the running daemon if there is
    /// one, else with a host running in this process on the same data dir.
    Stdio,
    /// Replay conformance fixtures against a host and report per fixture.
    Conformance(openwork_host::conformance::Args),
    /// Write schema/ (the OpenRPC document and JSON Schemas) from the method
    /// table; `scripts/codegen` runs this and regenerates the clients.
    Schema {
        /// The schema directory.
        #[arg(long, default_value = "schema")]
        out: PathBuf,
        /// Only report whether the directory is up to date (exit 1 if not).
        #[arg(long)]
        check: bool,
    },
}

fn main() -> ExitCode {
    openwork_host::alloc::keep_freed_memory();
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Serve { .. } => "info",
        _ => "warn",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(cli.log.as_deref().unwrap_or(default_log)));
    logging::init(filter);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("openwork-host: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("openwork-host: {}", cli::render::error_chain(&e));
            ExitCode::FAILURE
        }
    };
    // Reading stdin occupies a blocking thread that no one can interrupt;
    // do not wait for it once the work is done.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    // Say what the log's rate limit left out since its last report.
    logging::report_left_out();
    code
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Schema { out, check } = &cli.command {
        return schema(out, *check);
    }
    if let Command::Service(command) = &cli.command {
        return cli::service::run(command, cli.data_dir.as_deref()).await;
    }
    let data_dir = DataDir::resolve(cli.data_dir)?;
    match cli.command {
        Command::Serve { listen, no_mdns } => serve(data_dir, listen, no_mdns).await,
        Command::Stdio => stdio(data_dir).await,
        Command::Status { json } => cli::owner::status(&data_dir, json).await,
        Command::Doctor { json } => cli::owner::doctor(&data_dir, json).await,
        Command::Pair(args) => cli::owner::pair(&data_dir, args).await,
        Command::Ui(args) => cli::ui::ui(&data_dir, args).await,
        Command::Devices(command) => cli::owner::devices(&data_dir, command).await,
        Command::Permissions(command) => cli::owner::permissions(&data_dir, command).await,
        Command::Client {
            client_dir,
            command,
        } => {
            let dir = client_dir.unwrap_or_else(openwork_host::client::KnownHosts::default_dir);
            cli::client::run(dir, command).await
        }
        Command::Conformance(args) => openwork_host::conformance::main(args, &data_dir).await,
        Command::Schema { .. } | Command::Service(_) => {
            unreachable!("handled before the data dir is resolved")
        }
    }
}

fn schema(out: &std::path::Path, check: bool) -> anyhow::Result<ExitCode> {
    use openwork_host::schema;
    if !check {
        schema::write(out).with_context(|| format!("cannot write {}", out.display()))?;
        return Ok(ExitCode::SUCCESS);
    }
    let problems = schema::check(out)?;
    if problems.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for problem in &problems {
        eprintln!("{problem}");
    }
    eprintln!(
        "{} is out of date with the Rust types: run `scripts/codegen`",
        out.display()
    );
    Ok(ExitCode::FAILURE)
}

/// Raises the open-file limit to the hard limit: every connection is a file.
fn raise_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(error = %e, soft, "could not raise the open-file limit");
    }
}

async fn serve(data_dir: DataDir, listen: Vec<String>, no_mdns: bool) -> anyhow::Result<ExitCode> {
    raise_file_limit();
    let host = Host::open(data_dir, None)
        .await
        .context("cannot start the host")?;
    let listen = if listen.is_empty() {
        host.core().config().network.listen.clone()
    } else {
        listen
    };
    let mut addresses = Vec::new();
    for address in listen.iter().filter(|a| a.as_str() != "none") {
        addresses.push(address.parse::<std::net::SocketAddr>().with_context(|| {
            format!("--listen {address}: expected IP:PORT, e.g. 0.0.0.0:4747 or [::]:4747")
        })?);
    }
    let mdns = if no_mdns { Mdns::Off } else { Mdns::Advertise };
    host.serve(&addresses, mdns)?;
    let core = host.core();
    tracing::info!(
        host_id = %core.host_id(),
        fingerprint = %core.fingerprint(),
        data_dir = %core.data_dir().root().display(),
        "openwork-host {} is serving", env!("CARGO_PKG_VERSION")
    );
    wait_for_signal().await?;
    host.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn stdio(data_dir: DataDir) -> anyhow::Result<ExitCode> {
    if let Ok(socket) = unix::connect(&data_dir.socket()).await {
        let limit = openwork_host::config::Config::load(&data_dir.config())
            .map(|c| c.limits.max_frame_bytes)
            .unwrap_or(transport::DEFAULT_MAX_FRAME);
        let end =
            openwork_host::bridge::run(tokio::io::stdin(), tokio::io::stdout(), socket, limit)
                .await;
        // The same exit codes as with a host in this process (below).
        return Ok(match end {
            BridgeEnd::Exit {
                after_shutdown: false,
            } => ExitCode::from(1),
            BridgeEnd::Exit { .. } | BridgeEnd::InputEnded => ExitCode::SUCCESS,
            BridgeEnd::HostClosed => {
                eprintln!(
                    "openwork-host: the host on {} closed the connection (was it stopped? see `openwork-host status`)",
                    data_dir.root().display()
                );
                ExitCode::from(1)
            }
        });
    }
    let host = Host::open(data_dir, None)
        .await
        .context("cannot start an in-process host")?;
    let (reader, writer) = transport::stdio::framed(host.core().config().limits.max_frame_bytes);
    let opts = SessionOptions::local("stdio");
    let shutdown = host.shutdown_token();
    let session = host.serve_connection(reader, writer, opts);
    let end = tokio::select! {
        end = session => Some(end),
        signal = wait_for_signal() => { signal?; None }
    };
    host.shutdown().await;
    drop(shutdown);
    // LSP: `exit` after `shutdown` exits with 0, without it with 1.
    Ok(match end {
        Some(end) if end.reason == EndReason::Exit && !end.after_shutdown => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const README: &str = include_str!("../README.md");

    /// The lines of the README's ```sh blocks, with `\` continuations joined.
    fn shell_lines(markdown: &str) -> Vec<String> {
        let mut lines = Vec::new();
        let mut in_block = false;
        let mut pending = String::new();
        for line in markdown.lines() {
            if line.trim_start().starts_with("```") {
                in_block = line.trim() == "```sh";
                continue;
            }
            if !in_block {
                continue;
            }
            match line.strip_suffix('\\') {
                Some(start) => pending.push_str(start),
                None => {
                    pending.push_str(line);
                    lines.push(std::mem::take(&mut pending));
                }
            }
        }
        lines
    }

    /// Words as a shell splits them (quotes, comments, `&&`, `|`, `;`):
    /// the simple commands on the line.
    fn commands(line: &str) -> Vec<Vec<String>> {
        let mut commands = vec![Vec::new()];
        let mut word: Option<String> = None;
        let mut chars = line.chars().peekable();
        let mut quote = None;
        while let Some(c) = chars.next() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), c) => word.get_or_insert_with(String::new).push(c),
                (None, '"' | '\'') => {
                    quote = Some(c);
                    word.get_or_insert_with(String::new);
                }
                (None, '#') if word.is_none() => break,
                (None, c) if c.is_whitespace() => {
                    if let Some(w) = word.take() {
                        commands.last_mut().unwrap().push(w);
                    }
                }
                (None, '|' | ';' | '&') => {
                    if let Some(w) = word.take() {
                        commands.last_mut().unwrap().push(w);
                    }
                    if c == '&' {
                        chars.next_if_eq(&'&');
                    }
                    commands.push(Vec::new());
                }
                (None, c) => word.get_or_insert_with(String::new).push(c),
            }
        }
        if let Some(w) = word {
            commands.last_mut().unwrap().push(w);
        }
        commands.retain(|c| !c.is_empty());
        commands
    }

    #[test]
    fn the_set_up_installs_the_binary_before_it_is_used() {
        let setup = README
            .split("## Set-up on a fresh machine")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("a set-up section");
        let lines = shell_lines(setup);
        assert_eq!(lines.len(), 2, "two commands: {lines:?}");
        let first = commands(&lines[0]);
        let install = first
            .iter()
            .position(|c| c.starts_with(&["cargo".to_owned(), "install".to_owned()]))
            .expect("`cargo install` in the first command");
        let serve = first
            .iter()
            .position(|c| c == &["openwork-host", "serve"])
            .expect("`openwork-host serve` in the first command");
        assert!(install < serve, "{first:?}");
        assert_eq!(commands(&lines[1]), [["scripts/test"]]);
    }

    #[test]
    fn every_openwork_host_command_in_the_readme_parses() {
        let mut checked = 0;
        for line in shell_lines(README) {
            for command in commands(&line) {
                if command.first().map(String::as_str) != Some("openwork-host") {
                    continue;
                }
                if let Err(e) = Cli::try_parse_from(&command) {
                    panic!("README: `{}` does not parse:\n{e}", command.join(" "));
                }
                checked += 1;
            }
        }
        assert!(checked >= 5, "only {checked} commands found");
    }

    #[test]
    fn shell_words_are_split_as_a_shell_does() {
        assert_eq!(
            commands(r#"openwork-host client pair "my desk" --code 1 # a comment"#),
            [["openwork-host", "client", "pair", "my desk", "--code", "1"]]
        );
        assert_eq!(
            commands("cargo install --path . && openwork-host serve"),
            [
                vec!["cargo", "install", "--path", "."],
                vec!["openwork-host", "serve"]
            ]
        );
        assert_eq!(commands("echo '{}' | openwork-host stdio").len(), 2);
    }
}
