//! `openwork-host service install|uninstall|status`: the host as a systemd
//! user service (Linux) or a launchd agent (macOS), started at login (at
//! boot with lingering) and restarted when it fails.
//!
//! The unit text is made here and tested as text on every system; the
//! service manager is told only when the unit is written where it looks
//! (never with `--unit-dir` / `OPENWORK_SERVICE_DIR`, which tests use).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};

use super::out::outln;

/// The systemd unit's name (`journalctl --user -u openwork-host` finds its logs).
pub const SYSTEMD_UNIT: &str = "openwork-host.service";
/// The launchd agent's label (its file is `LABEL.plist`).
pub const LAUNCHD_LABEL: &str = "dev.openwork.host";

/// `openwork-host service …`.
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Write the service and start it now and at every login; restarted when it fails.
    Install {
        #[command(flatten)]
        place: Place,
        /// Print the unit (or agent) and change nothing.
        #[arg(long, visible_alias = "dry-run")]
        print: bool,
        /// Write it, but neither enable nor start it.
        #[arg(long)]
        no_start: bool,
    },
    /// Stop the service and remove it.
    Uninstall {
        #[command(flatten)]
        place: Place,
    },
    /// Whether the service is installed, enabled and running, and where its logs are.
    /// Exit status 0 when it runs, 3 when it does not.
    Status {
        #[command(flatten)]
        place: Place,
    },
}

/// Where the service goes.
#[derive(Debug, Args)]
pub struct Place {
    /// The directory to write the unit in. Default: ~/.config/systemd/user
    /// (systemd) or ~/Library/LaunchAgents (launchd). Elsewhere, the service
    /// manager is not told: nothing is enabled or started.
    #[arg(long, env = "OPENWORK_SERVICE_DIR", value_name = "DIR")]
    unit_dir: Option<PathBuf>,
    /// The service manager (default: launchd on macOS, systemd elsewhere).
    #[arg(long, value_enum)]
    manager: Option<Manager>,
}

/// A service manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Manager {
    Systemd,
    Launchd,
}

impl Manager {
    fn this_system() -> Manager {
        if cfg!(target_os = "macos") {
            Manager::Launchd
        } else {
            Manager::Systemd
        }
    }

    fn file_name(self) -> String {
        match self {
            Manager::Systemd => SYSTEMD_UNIT.to_owned(),
            Manager::Launchd => format!("{LAUNCHD_LABEL}.plist"),
        }
    }

    /// Where the manager looks for a user's services.
    fn default_dir(self) -> anyhow::Result<PathBuf> {
        let dirs = directories::BaseDirs::new()
            .context("cannot tell this user's home directory (is HOME set?)")?;
        Ok(match self {
            // $XDG_CONFIG_HOME/systemd/user, as systemd reads it.
            Manager::Systemd => std::env::var_os("XDG_CONFIG_HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .unwrap_or_else(|| dirs.home_dir().join(".config"))
                .join("systemd/user"),
            Manager::Launchd => dirs.home_dir().join("Library/LaunchAgents"),
        })
    }
}

/// What the service runs.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// The `openwork-host` binary.
    pub program: PathBuf,
    /// `--data-dir`, when not the default.
    pub data_dir: Option<PathBuf>,
    /// PATH for the host and its tasks (a service does not get the login shell's).
    pub path: Option<String>,
    /// Where launchd writes the host's log.
    pub log_file: PathBuf,
}

impl ServiceSpec {
    fn args(&self) -> Vec<String> {
        let mut args = vec![self.program.display().to_string()];
        if let Some(dir) = &self.data_dir {
            args.push("--data-dir".into());
            args.push(dir.display().to_string());
        }
        args.push("serve".into());
        args
    }
}

/// A systemd user unit for `spec`.
pub fn systemd_unit(spec: &ServiceSpec) -> String {
    let exec = spec
        .args()
        .iter()
        .map(|a| systemd_word(a, true))
        .collect::<Vec<_>>()
        .join(" ");
    let mut unit = String::new();
    unit.push_str(
        "# Written by `openwork-host service install`; `openwork-host service uninstall` removes it.\n",
    );
    unit.push_str("[Unit]\n");
    unit.push_str("Description=openwork-host: runs tasks for paired devices\n");
    // Ten failed starts within ten minutes: give up until `systemctl --user restart`.
    unit.push_str("StartLimitIntervalSec=600\nStartLimitBurst=10\n\n");
    unit.push_str("[Service]\nType=exec\n");
    unit.push_str(&format!("ExecStart={exec}\n"));
    if let Some(path) = &spec.path {
        unit.push_str(&format!(
            "Environment={}\n",
            systemd_word(&format!("PATH={path}"), false)
        ));
    }
    unit.push_str("Restart=on-failure\nRestartSec=5s\n");
    // SIGTERM to the host alone: it stops its tasks itself (SIGTERM, then
    // SIGKILL after kill_grace_ms), marks them interrupted and tells clients.
    unit.push_str("KillMode=mixed\nTimeoutStopSec=60\n");
    // Its log (stderr, plain text when not on a terminal) goes to the journal.
    unit.push_str(
        "StandardOutput=journal\nStandardError=journal\nSyslogIdentifier=openwork-host\n\n",
    );
    unit.push_str("[Install]\nWantedBy=default.target\n");
    unit
}

/// One word of a systemd command line or assignment: `%` and (in a
/// command line) `$` doubled, quoted when it has blanks, quotes or backslashes.
fn systemd_word(word: &str, command_line: bool) -> String {
    let mut escaped = word.replace('%', "%%");
    if command_line {
        escaped = escaped.replace('$', "$$");
    }
    let needs_quotes = word.is_empty()
        || word
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | ';'));
    if needs_quotes {
        format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        escaped
    }
}

/// A launchd agent (property list) for `spec`.
pub fn launchd_plist(spec: &ServiceSpec) -> String {
    let string = |s: &str| format!("<string>{}</string>", xml_escape(s));
    let mut plist = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
         <!-- Written by `openwork-host service install`; `openwork-host service uninstall` removes it. -->\n\
         <plist version=\"1.0\">\n<dict>\n",
    );
    plist.push_str(&format!(
        "  <key>Label</key>\n  {}\n",
        string(LAUNCHD_LABEL)
    ));
    plist.push_str("  <key>ProgramArguments</key>\n  <array>\n");
    for arg in spec.args() {
        plist.push_str(&format!("    {}\n", string(&arg)));
    }
    plist.push_str("  </array>\n");
    if let Some(path) = &spec.path {
        plist.push_str(&format!(
            "  <key>EnvironmentVariables</key>\n  <dict>\n    <key>PATH</key>\n    {}\n  </dict>\n",
            string(path)
        ));
    }
    // Started at login; started again when it exits with a failure.
    plist.push_str("  <key>RunAtLoad</key>\n  <true/>\n");
    plist.push_str(
        "  <key>KeepAlive</key>\n  <dict>\n    <key>SuccessfulExit</key>\n    <false/>\n  </dict>\n",
    );
    plist.push_str("  <key>ThrottleInterval</key>\n  <integer>5</integer>\n");
    // SIGTERM first: the host stops its tasks and tells clients.
    plist.push_str("  <key>ExitTimeOut</key>\n  <integer>60</integer>\n");
    let log = spec.log_file.display().to_string();
    plist.push_str(&format!(
        "  <key>StandardOutPath</key>\n  {}\n  <key>StandardErrorPath</key>\n  {}\n",
        string(&log),
        string(&log)
    ));
    plist.push_str("</dict>\n</plist>\n");
    plist
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Where launchd writes the host's log.
fn launchd_log(home: &Path) -> PathBuf {
    home.join("Library/Logs/openwork-host/serve.log")
}

/// The service for this binary and data dir.
fn spec(data_dir: Option<&Path>) -> anyhow::Result<ServiceSpec> {
    let program = std::env::current_exe().context("cannot tell where this program is")?;
    let data_dir = data_dir
        .map(std::path::absolute)
        .transpose()
        .context("cannot make the data dir's path absolute")?;
    let home = directories::BaseDirs::new()
        .map(|d| d.home_dir().to_owned())
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    Ok(ServiceSpec {
        program,
        data_dir,
        path: std::env::var("PATH").ok().filter(|p| !p.is_empty()),
        log_file: launchd_log(&home),
    })
}

/// Runs a `service` subcommand; `data_dir` is the global `--data-dir`, put in the unit.
pub async fn run(command: &ServiceCommand, data_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let place = match command {
        ServiceCommand::Install { place, .. }
        | ServiceCommand::Uninstall { place }
        | ServiceCommand::Status { place } => place,
    };
    let manager = place.manager.unwrap_or_else(Manager::this_system);
    // The manager is told only about a unit in the place it reads.
    let (dir, tell_manager) = match &place.unit_dir {
        Some(dir) => (dir.clone(), false),
        None => (manager.default_dir()?, true),
    };
    let file = dir.join(manager.file_name());
    match command {
        ServiceCommand::Install {
            print, no_start, ..
        } => {
            let spec = spec(data_dir)?;
            let text = match manager {
                Manager::Systemd => systemd_unit(&spec),
                Manager::Launchd => launchd_plist(&spec),
            };
            if *print {
                super::out::write(&text);
                return Ok(ExitCode::SUCCESS);
            }
            install(manager, &file, &text, &spec, tell_manager && !no_start)
        }
        ServiceCommand::Uninstall { .. } => uninstall(manager, &file, tell_manager),
        ServiceCommand::Status { .. } => status(manager, &file, tell_manager),
    }
}

fn write_file(file: &Path, text: &str) -> anyhow::Result<()> {
    let dir = file.parent().context("the unit has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, file).with_context(|| format!("cannot write {}", file.display()))
}

fn install(
    manager: Manager,
    file: &Path,
    text: &str,
    spec: &ServiceSpec,
    start: bool,
) -> anyhow::Result<ExitCode> {
    write_file(file, text)?;
    outln!("Wrote {}.", file.display());
    if !start {
        outln!("Not enabled or started; to do it yourself:");
        for step in manual_steps(manager, file) {
            outln!("  {step}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    match manager {
        Manager::Systemd => {
            // A host started by hand on the same data dir holds its lock:
            // the service could not start until that one stops.
            let by_hand = host_answers(spec.data_dir.as_deref())
                && tool("systemctl", &["--user", "is-active", SYSTEMD_UNIT])
                    .is_err_and(|e| !e.no_manager);
            let mut steps: Vec<&[&str]> = vec![
                &["--user", "daemon-reload"],
                &["--user", "enable", SYSTEMD_UNIT],
            ];
            if !by_hand {
                steps.push(&["--user", "restart", SYSTEMD_UNIT]);
            }
            for args in steps {
                if let Err(failure) = tool("systemctl", args) {
                    eprintln!(
                        "openwork-host: the unit is written, but {failure}.\n{}",
                        no_user_manager_help(manager, file)
                    );
                    return Ok(ExitCode::FAILURE);
                }
            }
            if by_hand {
                outln!(
                    "Enabled {SYSTEMD_UNIT}, not started: a host started by hand already runs on this \
                     data dir. Stop it (Ctrl-C where it runs), then: systemctl --user start openwork-host"
                );
            } else {
                outln!(
                    "Enabled and started {SYSTEMD_UNIT}: it starts at every login and restarts when it fails."
                );
            }
            outln!(
                "  status:  openwork-host service status   (or systemctl --user status openwork-host)"
            );
            outln!("  logs:    journalctl --user -u openwork-host -f");
            outln!("{}", linger_note());
        }
        Manager::Launchd => {
            if let Some(dir) = spec.log_file.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let domain = launchd_domain();
            // A service loaded already is replaced by the one just written.
            let _ = tool(
                "launchctl",
                &["bootout", &format!("{domain}/{LAUNCHD_LABEL}")],
            );
            let file_arg = file.display().to_string();
            if let Err(failure) = tool("launchctl", &["bootstrap", &domain, &file_arg]) {
                eprintln!(
                    "openwork-host: the agent is written, but {failure}.\n{}",
                    no_user_manager_help(manager, file)
                );
                return Ok(ExitCode::FAILURE);
            }
            outln!("Loaded {LAUNCHD_LABEL}: it starts at every login and restarts when it fails.");
            outln!("  status:  openwork-host service status");
            outln!("  logs:    {}", spec.log_file.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn uninstall(manager: Manager, file: &Path, tell_manager: bool) -> anyhow::Result<ExitCode> {
    if !file.exists() {
        outln!(
            "No service is installed at {}; nothing to remove.",
            file.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut failures = Vec::new();
    if tell_manager {
        let stop = match manager {
            Manager::Systemd => tool("systemctl", &["--user", "disable", "--now", SYSTEMD_UNIT]),
            Manager::Launchd => tool(
                "launchctl",
                &["bootout", &format!("{}/{LAUNCHD_LABEL}", launchd_domain())],
            ),
        };
        if let Err(failure) = stop {
            failures.push(failure);
        }
    }
    std::fs::remove_file(file).with_context(|| format!("cannot remove {}", file.display()))?;
    if tell_manager
        && manager == Manager::Systemd
        && let Err(failure) = tool("systemctl", &["--user", "daemon-reload"])
    {
        failures.push(failure);
    }
    outln!("Removed {}.", file.display());
    if failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for failure in failures {
        eprintln!("openwork-host: {failure}");
    }
    eprintln!(
        "openwork-host: the service manager could not be told to stop the host; \
         if one still runs, `openwork-host status` shows it."
    );
    Ok(ExitCode::FAILURE)
}

fn status(manager: Manager, file: &Path, tell_manager: bool) -> anyhow::Result<ExitCode> {
    if !file.exists() {
        outln!(
            "not installed: no {} ({}); `openwork-host service install` installs it.",
            manager.file_name(),
            file.display()
        );
        return Ok(ExitCode::from(3));
    }
    outln!("installed: {}", file.display());
    if !tell_manager {
        outln!("(not where the service manager looks: it is not enabled from here)");
        return Ok(ExitCode::from(3));
    }
    let running = match manager {
        Manager::Systemd => {
            let enabled = tool("systemctl", &["--user", "is-enabled", SYSTEMD_UNIT]);
            let active = tool("systemctl", &["--user", "is-active", SYSTEMD_UNIT]);
            outln!("enabled:   {}", answer(&enabled));
            outln!("active:    {}", answer(&active));
            outln!("logs:      journalctl --user -u openwork-host");
            outln!("{}", linger_note());
            if let Err(e) = &active
                && e.no_manager
            {
                eprintln!("{}", no_user_manager_help(manager, file));
            }
            active.is_ok_and(|a| a.trim() == "active")
        }
        Manager::Launchd => {
            let printed = tool(
                "launchctl",
                &["print", &format!("{}/{LAUNCHD_LABEL}", launchd_domain())],
            );
            let state = printed
                .as_deref()
                .ok()
                .and_then(|p| p.lines().find(|l| l.trim_start().starts_with("state =")))
                .map(|l| l.trim().trim_start_matches("state =").trim().to_owned());
            outln!("loaded:    {}", if printed.is_ok() { "yes" } else { "no" });
            outln!("state:     {}", state.as_deref().unwrap_or("not running"));
            outln!(
                "logs:      {}",
                launchd_log(
                    &directories::BaseDirs::new()
                        .map(|d| d.home_dir().to_owned())
                        .unwrap_or_default()
                )
                .display()
            );
            state.as_deref() == Some("running")
        }
    };
    Ok(if running {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

fn answer(result: &Result<String, ToolFailure>) -> String {
    match result {
        Ok(out) => out.trim().to_owned(),
        Err(failure) if failure.output.is_empty() => format!("unknown ({failure})"),
        Err(failure) => failure.output.clone(),
    }
}

/// The commands that enable and start a written unit by hand.
fn manual_steps(manager: Manager, file: &Path) -> Vec<String> {
    match manager {
        Manager::Systemd => vec![
            format!(
                "ln -sf {} ~/.config/systemd/user/{SYSTEMD_UNIT}   # unless it is there already",
                file.display()
            ),
            "systemctl --user daemon-reload".into(),
            format!("systemctl --user enable --now {SYSTEMD_UNIT}"),
        ],
        Manager::Launchd => vec![format!(
            "launchctl bootstrap gui/$(id -u) {}",
            file.display()
        )],
    }
}

/// Whether a host answers on the data dir's local socket.
fn host_answers(data_dir: Option<&Path>) -> bool {
    openwork_host::datadir::DataDir::resolve(data_dir.map(Path::to_path_buf))
        .is_ok_and(|dir| std::os::unix::net::UnixStream::connect(dir.socket()).is_ok())
}

/// What to do when the user's service manager cannot be reached.
fn no_user_manager_help(manager: Manager, file: &Path) -> String {
    let steps = manual_steps(manager, file)
        .into_iter()
        .skip(usize::from(manager == Manager::Systemd))
        .map(|s| format!("  {s}"))
        .collect::<Vec<_>>()
        .join("\n");
    match manager {
        Manager::Systemd => format!(
            "There is no systemd user manager for this session: the system does not run systemd \
             (a container), or this shell did not come from a login (`su`, `sudo`, cron). \
             Log in as this user (ssh or a desktop session) and run:\n{steps}\n\
             Or keep `openwork-host serve` running another way (tmux, your init system)."
        ),
        Manager::Launchd => format!(
            "launchd did not take the agent. From a login session of this user, run:\n{steps}"
        ),
    }
}

/// Whether the user manager outlives the user's sessions, and what that means.
fn linger_note() -> String {
    let uid = nix::unistd::Uid::current();
    let user = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    let linger = tool(
        "loginctl",
        &["show-user", &user, "--property=Linger", "--value"],
    );
    let without = format!(
        "without it the host runs while {user} is logged in and stops after the last session ends; \
         to start it at boot and keep it running without a login: loginctl enable-linger {user}"
    );
    match linger.as_deref().map(str::trim) {
        Ok("yes") => {
            "lingering: on; the host starts at boot and runs without anyone logged in.".to_owned()
        }
        Ok(_) => format!("lingering: off; {without}"),
        Err(_) => format!("lingering: unknown (loginctl cannot tell); {without}"),
    }
}

fn launchd_domain() -> String {
    format!("gui/{}", nix::unistd::Uid::current())
}

/// A service-manager command that failed.
#[derive(Debug)]
struct ToolFailure {
    command: String,
    /// What it printed (stdout, then stderr), trimmed.
    output: String,
    /// Its status, or why it did not run.
    why: String,
    /// No user manager answered (no bus), or the tool is missing.
    no_manager: bool,
}

impl std::fmt::Display for ToolFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` failed ({})", self.command, self.why)?;
        if !self.output.is_empty() {
            write!(f, ": {}", self.output)?;
        }
        Ok(())
    }
}

/// Runs a service-manager command; its stdout when it succeeds.
fn tool(program: &str, args: &[&str]) -> Result<String, ToolFailure> {
    let command = format!("{program} {}", args.join(" "));
    let output = match Command::new(program).args(args).output() {
        Ok(output) => output,
        Err(e) => {
            let why = if e.kind() == std::io::ErrorKind::NotFound {
                format!("{program} is not installed")
            } else {
                e.to_string()
            };
            return Err(ToolFailure {
                command,
                output: String::new(),
                why,
                no_manager: true,
            });
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if output.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    let text = [stdout, stderr]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let no_manager = text.contains("Failed to connect to bus")
        || text.contains("System has not been booted with systemd")
        || text.contains("$DBUS_SESSION_BUS_ADDRESS");
    Err(ToolFailure {
        command,
        why: match output.status.code() {
            Some(code) => format!("exit status {code}"),
            None => "killed by a signal".to_owned(),
        },
        output: text,
        no_manager,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(program: &str, data_dir: Option<&str>) -> ServiceSpec {
        ServiceSpec {
            program: program.into(),
            data_dir: data_dir.map(PathBuf::from),
            path: Some("/usr/local/bin:/usr/bin:/bin".into()),
            log_file: "/Users/ada/Library/Logs/openwork-host/serve.log".into(),
        }
    }

    #[test]
    fn the_systemd_unit_restarts_on_failure_logs_to_the_journal_and_starts_at_login() {
        let unit = systemd_unit(&spec("/home/ada/.cargo/bin/openwork-host", None));
        for line in [
            "ExecStart=/home/ada/.cargo/bin/openwork-host serve",
            "Restart=on-failure",
            "KillMode=mixed",
            "StandardError=journal",
            "SyslogIdentifier=openwork-host",
            "WantedBy=default.target",
            "Environment=PATH=/usr/local/bin:/usr/bin:/bin",
        ] {
            assert!(unit.lines().any(|l| l == line), "{line} in\n{unit}");
        }
    }

    #[test]
    fn systemd_words_with_blanks_percent_and_dollar_keep_their_meaning() {
        let unit = systemd_unit(&spec("/opt/my apps/openwork-host", Some("/srv/100%/$data")));
        assert!(
            unit.contains(
                "ExecStart=\"/opt/my apps/openwork-host\" --data-dir /srv/100%%/$$data serve"
            ),
            "{unit}"
        );
        assert_eq!(systemd_word("a\"b\\c d", true), "\"a\\\"b\\\\c d\"");
        assert_eq!(systemd_word("PATH=/a b:$x", false), "\"PATH=/a b:$x\"");
    }

    #[test]
    fn the_launchd_agent_keeps_the_host_alive_and_escapes_its_strings() {
        let plist = launchd_plist(&spec("/usr/local/bin/openwork-host", Some("/data/a&b")));
        for part in [
            "<key>Label</key>\n  <string>dev.openwork.host</string>",
            "<string>/usr/local/bin/openwork-host</string>\n    <string>--data-dir</string>\n    <string>/data/a&amp;b</string>\n    <string>serve</string>",
            "<key>RunAtLoad</key>\n  <true/>",
            "<key>SuccessfulExit</key>\n    <false/>",
            "<key>StandardErrorPath</key>\n  <string>/Users/ada/Library/Logs/openwork-host/serve.log</string>",
        ] {
            assert!(plist.contains(part), "{part} in\n{plist}");
        }
        assert!(!plist.contains("a&b"), "{plist}");
    }
}
