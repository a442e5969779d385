//! `openwork-host ui`: a one-time link to the owner's console, printed and opened in the default browser.

use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use super::out::outln;
use super::owner::connect;
use super::render;
use openwork_host::client::ClientError;
use openwork_host::datadir::DataDir;
use openwork_host::protocol::ConsoleLink;

/// `openwork-host ui` options.
#[derive(Debug, Args)]
pub struct UiArgs {
    /// How long the link works, in seconds: 1 to 600 (default 120). It works once.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=600))]
    ttl: Option<u64>,
    /// Print the link only; do not start a browser.
    #[arg(long)]
    no_open: bool,
    /// Print the link as JSON (for scripts); implies --no-open.
    #[arg(long)]
    json: bool,
}

/// `openwork-host ui`.
pub async fn ui(data_dir: &DataDir, args: UiArgs) -> anyhow::Result<ExitCode> {
    let mut conn = connect(data_dir).await?;
    let link: ConsoleLink = conn
        .call("console.link", json!({ "ttlS": args.ttl }))
        .await
        .map_err(|e| match e {
            ClientError::Rpc(rpc) => anyhow::anyhow!("{}", render::rpc_message(&rpc)),
            other => anyhow::anyhow!(other),
        })?;
    if args.json {
        outln!("{}", serde_json::to_string(&link)?);
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "The owner's console, for this machine's browser (the link works once, until {}):",
        link.expires_at
    );
    outln!();
    outln!("  {}", link.url);
    outln!();
    outln!(
        "The browser warns about the host's certificate unless it trusts it: the host made it itself (fingerprint {}).",
        render::grouped(&link.fingerprint, 4)
    );
    if !args.no_open {
        match open_browser(&link.url) {
            Ok(how) => outln!("Opened it with {how}."),
            Err(why) => outln!("Open it in a browser on this machine ({why})."),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Starts the default browser on `url` when there is a display and a way to
/// open it; says why not otherwise (never an error: the link is printed).
fn open_browser(url: &str) -> Result<&'static str, String> {
    let display = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()));
    if !display {
        return Err("no display here to start one on".into());
    }
    let opener = ["xdg-open", "open"]
        .into_iter()
        .find(|p| which(p))
        .ok_or_else(|| "xdg-open was not found".to_owned())?;
    std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(|_| opener)
        .map_err(|e| format!("{opener} failed: {e}"))
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}
