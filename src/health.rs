//! Health checks: each looks at one thing the host needs and says, in words,
//! what it found and, when it is wrong, what a person can do about it.
//!
//! The running host assembles its panel from these (`HostCore::checks`);
//! `openwork-host doctor` uses the offline ones when the host is down.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Config;
use crate::datadir::DataDir;
use crate::metrics::{RECENT_WINDOW, RecentCounts};
use crate::protocol::{CheckSeverity, DiscoveryHealth, HealthCheck};
use crate::runtime::opencode::RuntimeState;
use crate::runtime::opencode::{self, Enabled, INSTALL_ACTION, Located, OpencodeConfig};

/// The store accepts a write.
pub(crate) const STORE: &str = "store";
/// The data dir's file system has room.
pub(crate) const DISK: &str = "disk";
/// The host accepts connections where it should.
pub(crate) const LISTENERS: &str = "listeners";
/// The host announces itself on the LAN.
pub(crate) const MDNS: &str = "mdns";
/// The built-in runner can run tasks.
pub(crate) const BUILTIN: &str = "runtime.builtin";
/// OpenCode is there when it is wanted.
pub(crate) const OPENCODE: &str = "runtime.opencode";
/// No burst of failed authentications or handshakes.
pub(crate) const RECENT_FAILURES: &str = "recent_failures";
/// (doctor) The daemon runs.
pub const DAEMON: &str = "daemon";
/// (doctor) The data dir is usable and private.
pub const DATA_DIR: &str = "data_dir";
/// (doctor) config.toml is valid.
pub const CONFIG: &str = "config";

/// Failed authentications in the recent window that make the check fail.
pub(crate) const AUTH_ALARM: usize = 10;
/// Failed TLS handshakes in the recent window that make the check fail.
pub(crate) const HANDSHAKE_ALARM: usize = 20;

const MIB: u64 = 1024 * 1024;

/// The overall status the checks add up to: `ok`, `degraded` or `error`.
pub fn overall(checks: &[HealthCheck]) -> &'static str {
    let failing = |severity| checks.iter().any(|c| !c.ok && c.severity == severity);
    if failing(CheckSeverity::Error) {
        "error"
    } else if failing(CheckSeverity::Warning) {
        "degraded"
    } else {
        "ok"
    }
}

/// Bytes as `512 B`, `12.3 MiB`, `4.1 GiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The outcome of a test write to the store.
pub(crate) fn store(db: &Path, probe: &Result<Duration, String>) -> HealthCheck {
    match probe {
        Ok(took) => HealthCheck::pass(
            STORE,
            CheckSeverity::Error,
            format!("writable (a test write took {} ms)", took.as_millis()),
        ),
        Err(e) => HealthCheck::fail(
            STORE,
            CheckSeverity::Error,
            format!("cannot write to {}: {e}", db.display()),
            "free disk space and check that the data dir belongs to the user running the host \
             and is writable; the host's log has the details",
        ),
    }
}

/// Free space (and inodes) on the file system that holds `dir`.
pub(crate) fn disk(dir: &Path, min_free_mb: u64) -> HealthCheck {
    let where_ = dir.display();
    let stat = match nix::sys::statvfs::statvfs(dir) {
        Ok(stat) => stat,
        Err(e) => {
            return HealthCheck::fail(
                DISK,
                CheckSeverity::Error,
                format!("cannot read the free space of {where_}: {e}"),
                "check that the data dir exists and is readable by the user running the host",
            );
        }
    };
    let block = stat.fragment_size() as u64;
    let free = stat.blocks_available() as u64 * block;
    let total = stat.blocks() as u64 * block;
    let minimum = min_free_mb.saturating_mul(MIB);
    let raise = "free space there (delete files, or prune old tasks' output), or move the data dir \
                 to a larger file system (`--data-dir`); the threshold is [health] min_free_mb in config.toml";
    if free < minimum {
        return HealthCheck::fail(
            DISK,
            CheckSeverity::Error,
            format!(
                "{} free of {} on the file system of {where_}, below the {min_free_mb} MiB minimum: \
                 new task output may not be saved",
                bytes(free),
                bytes(total)
            ),
            raise,
        );
    }
    if stat.files() > 0 && stat.files_available() == 0 {
        return HealthCheck::fail(
            DISK,
            CheckSeverity::Error,
            format!("no free inodes on the file system of {where_}: no new file can be created"),
            raise,
        );
    }
    HealthCheck::pass(
        DISK,
        CheckSeverity::Error,
        format!("{} free of {} on {where_}", bytes(free), bytes(total)),
    )
}

/// A listener as the health check sees it.
#[derive(Debug, Clone)]
pub(crate) struct ListenerState {
    /// `tls` or `unix`.
    pub transport: String,
    pub address: String,
    /// Its accept loop still runs.
    pub accepting: bool,
}

/// Whether the host accepts connections where it was asked to.
/// `network` is false when no TLS listener was asked for (`--listen none`, or an in-process host).
pub(crate) fn listeners(states: &[ListenerState], network: bool) -> HealthCheck {
    let restart = "restart the host (`openwork-host serve`); its log says why";
    if let Some(dead) = states.iter().find(|l| !l.accepting) {
        return HealthCheck::fail(
            LISTENERS,
            CheckSeverity::Error,
            format!(
                "no longer accepting {} connections on {}",
                dead.transport, dead.address
            ),
            restart,
        );
    }
    if let Some(gone) = states
        .iter()
        .find(|l| l.transport == "unix" && !is_socket(Path::new(&l.address)))
    {
        return HealthCheck::fail(
            LISTENERS,
            CheckSeverity::Warning,
            format!(
                "the local socket {} was removed: `openwork-host status`, `pair` and `devices` cannot reach the host",
                gone.address
            ),
            "restart the host; it creates the socket again",
        );
    }
    let shown = states
        .iter()
        .map(|l| format!("{} {}", l.transport, l.address))
        .collect::<Vec<_>>()
        .join(", ");
    let message = match (network, shown.is_empty()) {
        (true, _) => format!("accepting on {shown}"),
        (false, true) => {
            "no listener: this host serves only the connection it was started for".into()
        }
        (false, false) => format!(
            "accepting on {shown}; no network listener (`--listen none`), so devices cannot connect"
        ),
    };
    HealthCheck::pass(LISTENERS, CheckSeverity::Error, message)
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// mDNS: whether the host is advertised on the LAN. Off is fine (devices
/// connect by address or the pairing QR code); a failure is a warning.
pub(crate) fn mdns(discovery: &DiscoveryHealth) -> HealthCheck {
    let instance = discovery.instance.as_deref().unwrap_or("this host");
    match discovery.state.as_str() {
        "advertising" => HealthCheck::pass(
            MDNS,
            CheckSeverity::Warning,
            format!("advertising `{instance}` as {}", discovery.service),
        ),
        "starting" => HealthCheck::pass(
            MDNS,
            CheckSeverity::Warning,
            format!("starting to advertise `{instance}` (probing the name)"),
        ),
        "failed" => HealthCheck::fail(
            MDNS,
            CheckSeverity::Warning,
            format!(
                "cannot advertise on the LAN: {}",
                discovery.message.as_deref().unwrap_or("unknown error")
            ),
            discovery.action.clone().unwrap_or_else(|| {
                "devices can still pair by address or the QR code; check [discovery] in config.toml".into()
            }),
        ),
        _ => HealthCheck::pass(
            MDNS,
            CheckSeverity::Warning,
            format!(
                "off ({}): devices connect by address or the pairing QR code",
                discovery.message.as_deref().unwrap_or("not advertised")
            ),
        ),
    }
}

/// The built-in runner: a usable workspace root and `/bin/sh`.
pub(crate) fn builtin(roots: &[PathBuf]) -> HealthCheck {
    let fix_roots = "create the directory, or set [tasks] workspace_roots in config.toml, then restart the host";
    let missing: Vec<String> = roots
        .iter()
        .filter(|r| !r.is_dir())
        .map(|r| r.display().to_string())
        .collect();
    if roots.is_empty() || missing.len() == roots.len() {
        return HealthCheck::fail(
            BUILTIN,
            CheckSeverity::Error,
            format!(
                "no workspace root exists ({}): tasks cannot run",
                missing.join(", ")
            ),
            fix_roots,
        );
    }
    if !Path::new("/bin/sh").is_file() {
        return HealthCheck::fail(
            BUILTIN,
            CheckSeverity::Error,
            "/bin/sh is missing: shell command tasks cannot run",
            "install a POSIX shell as /bin/sh",
        );
    }
    if !missing.is_empty() {
        return HealthCheck::fail(
            BUILTIN,
            CheckSeverity::Warning,
            format!(
                "workspace roots gone since the host started: {}",
                missing.join(", ")
            ),
            fix_roots,
        );
    }
    let shown: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
    HealthCheck::pass(
        BUILTIN,
        CheckSeverity::Error,
        format!("ready: tasks run in {}", shown.join(", ")),
    )
}

/// Whether config.toml asks for OpenCode explicitly (rather than "if installed").
fn opencode_wanted(config: &OpencodeConfig) -> bool {
    config.enabled == Enabled::On || config.binary.is_some() || config.url.is_some()
}

/// What to do when OpenCode is wanted but missing.
fn install_action(config: &OpencodeConfig) -> String {
    match &config.binary {
        Some(binary) => format!(
            "[opencode] binary in config.toml names {}, which does not exist: correct the path, \
             or install OpenCode (`npm install -g opencode-ai`) and point it there; then restart the host",
            binary.display()
        ),
        None => INSTALL_ACTION.to_owned(),
    }
}

/// OpenCode, as the running host sees it.
pub(crate) fn opencode(state: &RuntimeState, config: &OpencodeConfig, log: &Path) -> HealthCheck {
    let severity = CheckSeverity::Warning;
    match state {
        RuntimeState::Off => {
            HealthCheck::pass(OPENCODE, severity, "off ([opencode] enabled = \"off\")")
        }
        RuntimeState::NotInstalled { looked_for } if opencode_wanted(config) => HealthCheck::fail(
            OPENCODE,
            severity,
            format!(
                "OpenCode is enabled in config.toml but not installed (looked for {looked_for}): opencode tasks fail"
            ),
            install_action(config),
        ),
        RuntimeState::NotInstalled { looked_for } => HealthCheck::pass(
            OPENCODE,
            severity,
            format!(
                "not installed (looked for {looked_for}); the built-in runner does not need it"
            ),
        ),
        RuntimeState::Starting => HealthCheck::pass(OPENCODE, severity, "starting"),
        RuntimeState::Ready { version, .. } => {
            HealthCheck::pass(OPENCODE, severity, format!("ready (OpenCode {version})"))
        }
        RuntimeState::Restarting {
            attempt, reason, ..
        } => HealthCheck::fail(
            OPENCODE,
            severity,
            format!("not running: restarting (attempt {attempt}) after: {reason}"),
            match (&config.url, config.enabled) {
                (Some(url), Enabled::Auto | Enabled::On) => format!(
                    "check that the OpenCode server at {url} runs and answers, and that [opencode] username and password in config.toml match its OPENCODE_SERVER_USERNAME and OPENCODE_SERVER_PASSWORD; the host keeps trying"
                ),
                _ => format!(
                    "see {} for why it stops; check that `opencode serve` starts by hand",
                    log.display()
                ),
            },
        ),
        RuntimeState::Stopped => {
            HealthCheck::pass(OPENCODE, severity, "stopped (the host is shutting down)")
        }
    }
}

/// OpenCode while the host is down: whether it would be found.
pub fn opencode_offline(config: &OpencodeConfig) -> HealthCheck {
    let severity = CheckSeverity::Warning;
    match opencode::locate(config) {
        Located::Off => HealthCheck::pass(OPENCODE, severity, "off ([opencode] enabled = \"off\")"),
        Located::Url(url) => HealthCheck::pass(
            OPENCODE,
            severity,
            format!("uses the server at {url} (not contacted while the host is down)"),
        ),
        Located::Program(path) => {
            HealthCheck::pass(OPENCODE, severity, format!("found at {}", path.display()))
        }
        Located::Missing { looked_for } if opencode_wanted(config) => HealthCheck::fail(
            OPENCODE,
            severity,
            format!(
                "OpenCode is enabled in config.toml but not installed (looked for {looked_for})"
            ),
            install_action(config),
        ),
        Located::Missing { looked_for } => HealthCheck::pass(
            OPENCODE,
            severity,
            format!(
                "not installed (looked for {looked_for}); the built-in runner does not need it"
            ),
        ),
    }
}

/// Bursts of failed authentications or TLS handshakes.
pub(crate) fn recent_failures(recent: RecentCounts) -> HealthCheck {
    let minutes = RECENT_WINDOW.as_secs() / 60;
    let mut counts = format!(
        "{} failed authentication(s) (a device credential that matched no paired device) and {} failed TLS handshake(s) in the last {minutes} min",
        recent.auth_failures, recent.handshake_failures
    );
    if let Some(last) = &recent.last_auth_failure {
        counts.push_str(&format!("; the last failed credential came {last}"));
    }
    if recent.auth_failures >= AUTH_ALARM {
        return HealthCheck::fail(
            RECENT_FAILURES,
            CheckSeverity::Warning,
            counts,
            "a device may be using a revoked or wrong credential, or someone is guessing: \
             compare the device id above with `openwork-host devices list`, revoke any device you do not know, \
             and look in the host's log for `authentication failed` lines, which name each address and device id",
        );
    }
    if recent.handshake_failures >= HANDSHAKE_ALARM {
        return HealthCheck::fail(
            RECENT_FAILURES,
            CheckSeverity::Warning,
            counts,
            "something connects to the TLS port without completing TLS (a scanner, a wrong port, \
             or a client with another certificate pinned): check the devices' settings and the host's log",
        );
    }
    HealthCheck::pass(RECENT_FAILURES, CheckSeverity::Warning, counts)
}

/// The daemon is not running (for `doctor` and `status`).
pub fn daemon_down(data_dir: &DataDir, why: &str) -> HealthCheck {
    HealthCheck::fail(
        DAEMON,
        CheckSeverity::Error,
        format!(
            "the host is not running on {} ({why})",
            data_dir.root().display()
        ),
        start_command(data_dir),
    )
}

/// How to start the host on this data dir.
pub fn start_command(data_dir: &DataDir) -> String {
    format!(
        "start it with `openwork-host serve --data-dir {}`",
        data_dir.root().display()
    )
}

/// The data dir exists (or can be created), is a directory, ours, and private.
pub fn data_dir(data_dir: &DataDir) -> HealthCheck {
    let root = data_dir.root();
    let shown = root.display();
    let meta = match std::fs::metadata(root) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return HealthCheck::pass(
                DATA_DIR,
                CheckSeverity::Error,
                format!("{shown} does not exist yet; `openwork-host serve` creates it"),
            );
        }
        Err(e) => {
            return HealthCheck::fail(
                DATA_DIR,
                CheckSeverity::Error,
                format!("cannot read {shown}: {e}"),
                "check the permissions of the data dir and its parents",
            );
        }
    };
    if !meta.is_dir() {
        return HealthCheck::fail(
            DATA_DIR,
            CheckSeverity::Error,
            format!("{shown} is not a directory"),
            "move that file away, or pass another --data-dir",
        );
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return HealthCheck::fail(
            DATA_DIR,
            CheckSeverity::Error,
            format!(
                "{shown} belongs to user {}, not to you (user {me})",
                meta.uid()
            ),
            "run the host as the data dir's owner, or pass a --data-dir of your own",
        );
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return HealthCheck::fail(
            DATA_DIR,
            CheckSeverity::Warning,
            format!(
                "{shown} is open to other users (mode {mode:o}); it holds the host's key and the device credentials"
            ),
            format!("chmod 700 {shown}"),
        );
    }
    HealthCheck::pass(
        DATA_DIR,
        CheckSeverity::Error,
        format!("{shown} is private to you"),
    )
}

/// config.toml is valid (or absent); returns the config to use for the other checks.
pub fn config(data_dir: &DataDir) -> (HealthCheck, Config) {
    let path = data_dir.config();
    if !path.exists() {
        return (
            HealthCheck::pass(
                CONFIG,
                CheckSeverity::Error,
                format!("no {}: the embedded defaults apply", path.display()),
            ),
            Config::default(),
        );
    }
    match Config::load(&path) {
        Ok(config) => (
            HealthCheck::pass(
                CONFIG,
                CheckSeverity::Error,
                format!("{} is valid", path.display()),
            ),
            config,
        ),
        Err(e) => (
            HealthCheck::fail(
                CONFIG,
                CheckSeverity::Error,
                format!("{e}: the host will not start"),
                "fix the setting the message names (README.md lists every setting), or move config.toml away to use the defaults",
            ),
            Config::default(),
        ),
    }
}

/// The store while the host is down: it opens and passes SQLite's quick check.
pub fn store_offline(data_dir: &DataDir) -> HealthCheck {
    let db = data_dir.database();
    if !db.exists() {
        return HealthCheck::pass(
            STORE,
            CheckSeverity::Error,
            format!("no {} yet; the host creates it", db.display()),
        );
    }
    match crate::store::inspect(&db) {
        Ok(version) => HealthCheck::pass(
            STORE,
            CheckSeverity::Error,
            format!(
                "{} opens and passes a quick check (schema version {version})",
                db.display()
            ),
        ),
        Err(e) => HealthCheck::fail(
            STORE,
            CheckSeverity::Error,
            format!("{}: {e}", db.display()),
            "if it is damaged, restore host.db from a backup, or move it away to start afresh \
             (the task history is lost); if it is newer, upgrade openwork-host",
        ),
    }
}

/// Everything `doctor` can check without the host running.
pub fn offline(dir: &DataDir) -> Vec<HealthCheck> {
    let (config_check, config) = config(dir);
    let mut checks = vec![data_dir(dir), config_check, store_offline(dir)];
    // The disk check needs an existing directory: the data dir, or the nearest parent.
    let mut existing = dir.root().to_path_buf();
    while !existing.exists() {
        match existing.parent() {
            Some(parent) => existing = parent.to_path_buf(),
            None => break,
        }
    }
    checks.push(disk(&existing, config.health.min_free_mb));
    checks.push(builtin(&config.tasks.workspace_roots));
    checks.push(opencode_offline(&config.opencode));
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ok: bool, severity: CheckSeverity) -> HealthCheck {
        HealthCheck {
            name: "x".into(),
            ok,
            severity,
            message: String::new(),
            action: None,
        }
    }

    #[test]
    fn the_overall_status_is_the_worst_failing_severity() {
        assert_eq!(overall(&[]), "ok");
        assert_eq!(
            overall(&[
                check(true, CheckSeverity::Error),
                check(true, CheckSeverity::Warning)
            ]),
            "ok"
        );
        assert_eq!(
            overall(&[
                check(true, CheckSeverity::Error),
                check(false, CheckSeverity::Warning)
            ]),
            "degraded"
        );
        assert_eq!(
            overall(&[
                check(false, CheckSeverity::Error),
                check(false, CheckSeverity::Warning)
            ]),
            "error"
        );
    }

    #[test]
    fn the_disk_check_fails_below_the_threshold_with_an_action() {
        let dir = tempfile::tempdir().unwrap();
        let fine = disk(dir.path(), 0);
        assert!(fine.ok, "{fine:?}");
        assert!(fine.message.contains("free of"), "{}", fine.message);
        // More than any disk here has.
        let full = disk(dir.path(), u64::MAX / MIB);
        assert!(!full.ok);
        assert_eq!(full.severity, CheckSeverity::Error);
        assert!(full.message.contains("below the"), "{}", full.message);
        assert!(full.action.unwrap().contains("min_free_mb"));
        let gone = disk(&dir.path().join("missing"), 0);
        assert!(!gone.ok && gone.action.is_some());
    }

    #[test]
    fn listeners_fail_when_one_stopped_or_the_socket_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("s.sock");
        let _bound = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let unix = ListenerState {
            transport: "unix".into(),
            address: socket.display().to_string(),
            accepting: true,
        };
        let tls = ListenerState {
            transport: "tls".into(),
            address: "127.0.0.1:4747".into(),
            accepting: true,
        };
        assert!(listeners(&[unix.clone(), tls.clone()], true).ok);
        let stopped = ListenerState {
            accepting: false,
            ..tls.clone()
        };
        let failed = listeners(&[unix.clone(), stopped], true);
        assert!(!failed.ok && failed.severity == CheckSeverity::Error);
        std::fs::remove_file(&socket).unwrap();
        let gone = listeners(&[unix, tls], true);
        assert!(!gone.ok && gone.message.contains("removed"), "{gone:?}");
        assert!(
            listeners(&[], false).ok,
            "an in-process host has no listener"
        );
    }

    #[test]
    fn a_missing_runtime_fails_only_when_it_was_asked_for() {
        let missing = RuntimeState::NotInstalled {
            looked_for: "/nowhere/opencode".into(),
        };
        let log = Path::new("/tmp/opencode.log");
        let auto = OpencodeConfig::default();
        assert!(opencode(&missing, &auto, log).ok);
        let wanted = OpencodeConfig {
            enabled: Enabled::On,
            ..OpencodeConfig::default()
        };
        let check = opencode(&missing, &wanted, log);
        assert!(!check.ok);
        assert_eq!(check.action.as_deref(), Some(INSTALL_ACTION));
        let named = OpencodeConfig {
            binary: Some("/nowhere/opencode".into()),
            ..OpencodeConfig::default()
        };
        let check = opencode(&missing, &named, log);
        assert!(check.action.unwrap().contains("/nowhere/opencode"));
        let offline = opencode_offline(&OpencodeConfig {
            binary: Some("/nowhere/opencode".into()),
            ..OpencodeConfig::default()
        });
        assert!(!offline.ok && offline.message.contains("/nowhere/opencode"));
    }

    #[test]
    fn a_restarting_server_points_at_what_the_host_runs_or_uses() {
        let restarting = RuntimeState::Restarting {
            attempt: 2,
            reason: "OpenCode refused the host's credentials (401)".into(),
        };
        let log = Path::new("/data/opencode.log");
        let managed = opencode(&restarting, &OpencodeConfig::default(), log);
        assert!(!managed.ok && managed.message.contains("attempt 2"));
        assert!(managed.action.unwrap().contains("/data/opencode.log"));
        let external = opencode(
            &restarting,
            &OpencodeConfig {
                url: Some("http://10.0.0.5:4096".into()),
                ..OpencodeConfig::default()
            },
            log,
        );
        let action = external.action.unwrap();
        assert!(
            action.contains("http://10.0.0.5:4096") && action.contains("password"),
            "{action}"
        );
        assert!(!action.contains("opencode.log"), "{action}");
    }

    #[test]
    fn bursts_of_failures_are_flagged() {
        assert!(recent_failures(RecentCounts::default()).ok);
        let auth = recent_failures(RecentCounts {
            auth_failures: AUTH_ALARM,
            handshake_failures: 0,
            last_auth_failure: Some("from 192.0.2.7:5 for device id \"x\"".into()),
        });
        assert!(
            auth.message.contains("from 192.0.2.7:5"),
            "{}",
            auth.message
        );
        assert!(!auth.ok && auth.action.unwrap().contains("devices list"));
        let tls = recent_failures(RecentCounts {
            auth_failures: 0,
            handshake_failures: HANDSHAKE_ALARM,
            last_auth_failure: None,
        });
        assert!(!tls.ok);
    }

    #[test]
    fn bytes_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * MIB / 2), "1.5 MiB");
    }
}
