//! Terminal output: QR codes, grouped codes, durations, scope lists, the
//! health panel, colours, and the reconnecting status line.

use std::io::{IsTerminal, Write};

use openwork_host::auth::Scope;
use openwork_host::client::LinkEvent;
use openwork_host::protocol::{CheckSeverity, HealthCheck, HealthReport};

/// A QR code drawn with half blocks, two rows per line.
pub fn qr(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    )
}

/// `12345678` as `1234 5678`, easier to read out.
pub fn grouped(text: &str, size: usize) -> String {
    text.chars()
        .collect::<Vec<_>>()
        .chunks(size)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Seconds as `3h 4m`, `2m 10s` or `42s`.
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// Parses `a,b,c` into scopes.
pub fn parse_scopes(list: &str) -> anyhow::Result<Vec<Scope>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|name| {
            Scope::parse(name).ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown scope `{name}`; the scopes are {}",
                    Scope::join(&Scope::ALL, ", ")
                )
            })
        })
        .collect()
}

/// Scopes with what each allows, one per line.
pub fn scope_lines(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| format!("      {:<18} {}", s.as_str(), s.description()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Lines typed on stdin, read on a thread of their own.
pub fn stdin_lines() -> tokio::sync::mpsc::Receiver<String> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { return };
            if tx.blocking_send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Colours for terminal output: on only when the stream is a terminal and
/// `NO_COLOR` is unset.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    colour: bool,
}

impl Style {
    /// For stdout.
    pub fn stdout() -> Style {
        Style::for_terminal(std::io::stdout().is_terminal())
    }

    /// For stderr.
    pub fn stderr() -> Style {
        Style::for_terminal(std::io::stderr().is_terminal())
    }

    fn for_terminal(terminal: bool) -> Style {
        Style {
            colour: terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    pub fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }
    pub fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }
    pub fn green(&self, text: &str) -> String {
        self.paint("32", text)
    }
    pub fn yellow(&self, text: &str) -> String {
        self.paint("33", text)
    }
    pub fn red(&self, text: &str) -> String {
        self.paint("31", text)
    }

    /// `ok`, `degraded` or `error`, in its colour.
    pub fn status(&self, status: &str) -> String {
        self.as_status(status, status)
    }

    /// `text` in the colour of `status`.
    pub fn as_status(&self, status: &str, text: &str) -> String {
        match status {
            "ok" => self.green(text),
            "degraded" => self.yellow(text),
            _ => self.red(text),
        }
    }
}

/// The exit code for an overall status: 0 ok, 1 degraded, 2 error.
pub fn status_exit_code(status: &str) -> std::process::ExitCode {
    match status {
        "ok" => std::process::ExitCode::SUCCESS,
        "degraded" => std::process::ExitCode::from(1),
        _ => std::process::ExitCode::from(2),
    }
}

/// Checks, one per line, with the fix under each failing one.
pub fn check_lines(checks: &[HealthCheck], style: &Style) -> String {
    let mut out = String::new();
    for check in checks {
        let mark = match (check.ok, check.severity) {
            (true, _) => style.green("✓"),
            (false, CheckSeverity::Error) => style.red("✗"),
            (false, CheckSeverity::Warning) => style.yellow("!"),
        };
        out.push_str(&format!("  {mark} {:<18} {}\n", check.name, check.message));
        if let Some(action) = check.action.as_deref().filter(|_| !check.ok) {
            out.push_str(&format!("    {:<18} {} {action}\n", "", style.bold("fix:")));
        }
    }
    out
}

/// The health panel, in sections.
pub fn health_panel(h: &HealthReport, reached_at: &str, style: &Style) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let section = |out: &mut String, title: &str| {
        let _ = writeln!(out, "\n{}", style.bold(title));
    };
    let _ = writeln!(
        out,
        "openwork-host {} on {} ({reached_at}): {}",
        h.version,
        h.host_name,
        style.status(&h.status)
    );
    section(&mut out, "Host");
    let _ = writeln!(out, "  {:<13} {}", "id", h.host_id);
    let _ = writeln!(
        out,
        "  {:<13} {}",
        "fingerprint",
        grouped(&h.fingerprint, 4)
    );
    if let Some(dir) = &h.data_dir {
        let _ = writeln!(out, "  {:<13} {dir}", "data dir");
    }
    let _ = writeln!(
        out,
        "  {:<13} {} (since {})",
        "up",
        duration(h.uptime_s),
        h.started_at
    );
    if let Some(listeners) = &h.listeners {
        section(&mut out, "Listening");
        if listeners.is_empty() {
            let _ = writeln!(out, "  {}", style.dim("nowhere"));
        }
        for l in listeners {
            let _ = writeln!(out, "  {:<13} {}", l.transport, l.address);
        }
    }
    if let Some(discovery) = &h.discovery {
        let detail = |v: &Option<String>| v.clone().unwrap_or_default();
        let line = match discovery.state.as_str() {
            "failed" => style.as_status(
                "degraded",
                &format!(
                    "failed: {}; {}",
                    detail(&discovery.message),
                    detail(&discovery.action)
                ),
            ),
            "off" => format!("off ({})", detail(&discovery.message)),
            state => format!(
                "{state} as \"{}\" ({})",
                detail(&discovery.instance),
                discovery.service
            ),
        };
        let _ = writeln!(out, "  {:<13} {line}", "mdns");
    }
    if let Some(runtimes) = &h.runtimes {
        section(&mut out, "Runtimes");
        for r in runtimes {
            let mut line = r.state.clone();
            if let Some(version) = &r.version {
                line.push_str(&format!(" ({version})"));
            }
            if let Some(message) = &r.message {
                line.push_str(&format!(": {message}"));
            }
            let _ = writeln!(out, "  {:<13} {line}", r.name);
        }
    }
    if let Some(pairing) = &h.pairing {
        section(&mut out, "Pairing");
        let line = match (&pairing.expires_at, pairing.open) {
            (Some(until), true) => format!(
                "open until {until}, {} device(s) waiting for approval",
                pairing.pending
            ),
            _ => "closed (`openwork-host pair` opens a window)".to_owned(),
        };
        let _ = writeln!(out, "  {line}");
    }
    if h.tasks.is_some() || h.last_task.is_some() || h.connections.is_some() {
        section(&mut out, "Tasks");
    }
    if let Some(t) = &h.tasks {
        let _ = writeln!(
            out,
            "  {:<13} {} running, {} queued, {} waiting for permission",
            "now", t.running, t.queued, t.waiting_permission
        );
        let _ = writeln!(
            out,
            "  {:<13} {} succeeded, {} failed, {} cancelled, {} interrupted",
            "all time", t.succeeded, t.failed, t.cancelled, t.interrupted
        );
    }
    if let Some(last) = &h.last_task {
        let mut outcome = last.status.as_str().to_owned();
        if let Some(code) = last.exit_code {
            outcome.push_str(&format!(" (exit {code})"));
        } else if let Some(signal) = &last.signal {
            outcome.push_str(&format!(" ({signal})"));
        }
        let what = last
            .title
            .clone()
            .or_else(|| last.command.clone())
            .or_else(|| last.argv.as_ref().map(|a| a.join(" ")))
            .or_else(|| last.prompt.clone())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<13} {} {outcome} at {}: {what}",
            "last",
            last.task_id,
            last.finished_at.as_deref().unwrap_or("?")
        );
    }
    if let Some(connections) = h.connections {
        let _ = writeln!(out, "  {:<13} {connections} open", "connections");
    }
    if let Some(checks) = &h.checks {
        section(&mut out, "Checks");
        out.push_str(&check_lines(checks, style));
    }
    out
}

/// Shows the connection's state on stderr while a client reconnects: one
/// line redrawn in place on a terminal, plain lines otherwise.
pub fn link_status(host: &str) -> impl FnMut(&LinkEvent) + Send + 'static {
    let style = Style::stderr();
    let terminal = std::io::stderr().is_terminal();
    let host = host.to_owned();
    let mut was_connected = false;
    move |event| {
        let mut err = std::io::stderr().lock();
        let line = match event {
            LinkEvent::Lost { error } => {
                was_connected = true;
                format!("reconnecting to {host}: the connection dropped ({error})")
            }
            LinkEvent::Retrying {
                attempt,
                error,
                retry_in,
                give_up_in,
                ..
            } => {
                let verb = if was_connected {
                    "reconnecting to"
                } else {
                    "connecting to"
                };
                format!(
                    "{verb} {host} (attempt {attempt} failed; next try in {:.1} s, giving up in {}): {error}",
                    retry_in.as_secs_f64(),
                    duration(give_up_in.as_secs())
                )
            }
            LinkEvent::Failed { .. } => {
                // The error itself is reported by the caller; end the status line first.
                if terminal {
                    let _ = write!(err, "\r\x1b[2K");
                    let _ = err.flush();
                }
                return;
            }
            LinkEvent::Moved { from, to } => {
                let line =
                    format!("{host} no longer answers at {from}; found it on the LAN at {to}");
                if terminal {
                    let _ = writeln!(err, "\r\x1b[2K{line}");
                } else {
                    let _ = writeln!(err, "openwork-host: {line}");
                }
                return;
            }
            LinkEvent::Restored { down_for, .. } => {
                let line = format!(
                    "reconnected to {host} after {:.1} s; resuming",
                    down_for.as_secs_f64()
                );
                if terminal {
                    let _ = writeln!(err, "\r\x1b[2K{}", style.green(&line));
                } else {
                    let _ = writeln!(err, "openwork-host: {line}");
                }
                return;
            }
        };
        if terminal {
            // One line, redrawn: the latest state is what matters. Cut to the
            // terminal's width, or the redraw would leave wrapped remains.
            let width = terminal_width().unwrap_or(80).saturating_sub(3);
            let line: String = line.chars().take(width).collect();
            let _ = write!(err, "\r\x1b[2K{} {}", style.yellow("⟳"), line);
        } else {
            let _ = writeln!(err, "openwork-host: {line}");
        }
        let _ = err.flush();
    }
}

/// Columns of the terminal on stderr, if it is one.
fn terminal_width() -> Option<usize> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we own.
    let read = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) };
    (read == 0 && size.ws_col > 0).then_some(size.ws_col as usize)
}

/// An error and its causes on one line, each said once: a cause whose text
/// an outer error already includes (`cannot bind X: Address already in use`
/// over `Address already in use`) is left out.
pub fn error_chain(error: &anyhow::Error) -> String {
    let mut said: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        let text = text.trim();
        if text.is_empty() || said.iter().any(|outer| outer.contains(text)) {
            continue;
        }
        said.push(text.to_owned());
    }
    said.join(": ")
}

/// `1 try`, `2 tries`: a count with its noun, singular or plural.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot bind {address}: {source}")]
    struct Bind {
        address: String,
        source: std::io::Error,
    }

    #[test]
    fn each_cause_is_said_once() {
        let io = || std::io::Error::from_raw_os_error(libc::EADDRINUSE);
        let bound = Bind {
            address: "[::]:4747".into(),
            source: io(),
        };
        let error = anyhow::Error::new(bound).context("cannot start the host");
        let text = error_chain(&error);
        assert_eq!(text.matches("Address already in use").count(), 1, "{text}");
        assert!(
            text.starts_with(
                "cannot start the host: cannot bind [::]:4747: Address already in use"
            ),
            "{text}"
        );
        // A cause the outer message leaves out is still said.
        let error = anyhow::Error::new(io()).context("cannot open host.db");
        assert_eq!(
            error_chain(&error),
            format!("cannot open host.db: {}", io())
        );
    }

    #[test]
    fn counts_agree_with_their_noun() {
        assert_eq!(count(1, "try", "tries"), "1 try");
        assert_eq!(count(0, "try", "tries"), "0 tries");
        assert_eq!(count(4, "try", "tries"), "4 tries");
    }
}

/// The JSON-RPC methods an error's `data.action` may name, and the command
/// that does the same from the command line.
const METHOD_COMMANDS: [(&str, &str); 5] = [
    ("`task.list`", "`openwork-host client tasks`"),
    ("`task.get`", "`openwork-host client tasks`"),
    ("`task.logs`", "`openwork-host client logs TASK`"),
    ("`permission.rules`", "`openwork-host permissions list`"),
    ("`pairing.begin`", "`openwork-host client pair`"),
];

/// An error's `data.action` (protocol-level: it names methods) in the
/// command line's words.
pub fn cli_action(action: &str) -> String {
    let mut text = action.to_owned();
    for (method, command) in METHOD_COMMANDS {
        text = text.replace(method, command);
    }
    text
}

/// A host's error for a person at the command line: its message, and what
/// to do in the command line's words.
pub fn rpc_message(error: &openwork_host::rpc::RpcError) -> String {
    match error.action() {
        Some(action) => format!("{} ({})", error.message, cli_action(action)),
        None => error.message.clone(),
    }
}

#[cfg(test)]
mod action_tests {
    use super::*;

    #[test]
    fn actions_name_commands_not_methods() {
        assert_eq!(
            cli_action("list tasks with `task.list` to find the right id"),
            "list tasks with `openwork-host client tasks` to find the right id"
        );
        let error = openwork_host::rpc::RpcError::new(
            openwork_host::rpc::ErrorCode::NOT_FOUND,
            "rule r_1 not found",
        )
        .with_action("list remembered rules with `permission.rules`");
        assert_eq!(
            rpc_message(&error),
            "rule r_1 not found (list remembered rules with `openwork-host permissions list`)"
        );
    }
}
