//! The host's configuration (`config.toml` in the data dir) and its defaults.
//!
//! Every setting has an embedded default, so a host runs with no file at all.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::discovery::DiscoveryConfig;
use crate::pairing::PairingConfig;
use crate::permissions::PermissionsConfig;
pub use crate::runtime::opencode::{Enabled, OpencodeConfig};
use crate::transport::DEFAULT_MAX_FRAME;
use crate::transport::tls::DEFAULT_PORT;

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub host: HostConfig,
    pub limits: Limits,
    pub tasks: TasksConfig,
    pub network: NetworkConfig,
    pub discovery: DiscoveryConfig,
    pub pairing: PairingConfig,
    pub devices: DevicesConfig,
    pub permissions: PermissionsConfig,
    pub opencode: OpencodeConfig,
    pub health: HealthConfig,
    pub metrics: MetricsConfig,
}

/// Thresholds of the health checks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// The disk check fails when the data dir's file system has less free space than this, in MiB.
    pub min_free_mb: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self { min_free_mb: 100 }
    }
}

/// Local metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Record counters (connections, failures, uptime) in the store. They
    /// never leave the machine either way; `false` stops recording them.
    pub telemetry: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { telemetry: true }
    }
}

/// The TLS listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Addresses to listen on (`--listen` overrides); `[::]` takes IPv4 too.
    pub listen: Vec<String>,
    /// The address devices are told to connect to when pairing; default:
    /// this machine's first LAN IPv4 address.
    pub advertise_address: Option<String>,
    /// A TLS handshake must finish within this, or the peer is dropped.
    pub handshake_timeout_ms: u64,
    /// Network connections open at once, authenticated or not; more are
    /// refused (or, when some are not authenticated yet, the oldest of those
    /// is dropped to make room: see `max_unauthenticated`).
    pub max_connections: usize,
    /// Network connections not authenticated yet (in the TLS handshake, or
    /// before a successful `initialize` with a device's credential). When
    /// they are this many, a new connection takes the place of the oldest
    /// from the address holding the most, so that a paired device can always
    /// connect; a connection leaves this budget when it authenticates. At
    /// most `max_connections` (a larger value counts as that).
    pub max_unauthenticated: usize,
    /// Unauthenticated connections from one IP address; past this, a new one
    /// from that address takes the place of its oldest.
    pub max_unauthenticated_per_address: usize,
    /// After the TLS handshake, `initialize` must have been answered within
    /// this, or the connection is closed.
    pub initialize_timeout_ms: u64,
    /// An unauthenticated connection with no call in progress is closed
    /// after this long without a byte from it.
    pub unauthenticated_idle_ms: u64,
    /// A frame, once begun, must keep arriving: the connection is closed
    /// when this passes without a byte of it (before authentication: when
    /// the whole frame has not arrived within this).
    pub frame_timeout_ms: u64,
    /// An authenticated connection is closed after this long with nothing
    /// read from it and nothing written to it (clients ping after 15 s of
    /// quiet, so a live one never gets near it).
    pub keepalive_timeout_s: u64,
    /// A certificate chain (PEM) for browsers, e.g. from `tailscale cert`,
    /// an internal CA or ACME, so that they need not warn about the host's
    /// self-signed one; with `key`. Absolute, or relative to the data dir.
    /// Reloaded when the files change. Native clients never see it.
    pub certificate: Option<PathBuf>,
    /// The private key (PEM) of `certificate`.
    pub key: Option<PathBuf>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            listen: vec![format!("[::]:{DEFAULT_PORT}")],
            advertise_address: None,
            handshake_timeout_ms: 10_000,
            max_connections: 4096,
            max_unauthenticated: 256,
            max_unauthenticated_per_address: 32,
            initialize_timeout_ms: 10_000,
            unauthenticated_idle_ms: 30_000,
            frame_timeout_ms: 30_000,
            keepalive_timeout_s: 120,
            certificate: None,
            key: None,
        }
    }
}

/// Paired devices.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DevicesConfig {
    /// Let devices holding the `admin` scope manage devices and pairing from
    /// the network. Off: only the host's owner, locally, can.
    pub remote_admin: bool,
}

/// About the host itself.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// The friendly name shown to clients; default the machine's hostname.
    pub name: Option<String>,
}

/// Bounds on what a connection may send.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// The largest frame accepted, in bytes.
    pub max_frame_bytes: usize,
    /// Requests one connection may have in flight before the host stops reading from it.
    pub max_requests_in_flight: usize,
    /// Bytes of replies one connection may have produced and not yet taken
    /// (a batch's replies count together). While they are this many the host
    /// stops reading the connection's requests; a call that may produce a
    /// large reply waits for room before it runs.
    pub max_reply_bytes_in_flight: usize,
}

/// The built-in task runner.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TasksConfig {
    /// Directories tasks may run in (their `cwd` must lie inside one).
    /// Default: the home directory of the user running the host.
    pub workspace_roots: Vec<PathBuf>,
    /// Tasks running at once; more wait as `queued`.
    pub max_concurrent: usize,
    /// After `task.cancel` sends SIGTERM, how long before SIGKILL.
    pub kill_grace_ms: u64,
    /// Timeout for tasks that set none; absent means no timeout.
    pub default_timeout_s: Option<u64>,
    /// How a task's descendants are ended: a cgroup per task (`auto` when
    /// the host may create one, `cgroup` to insist) or a walk of /proc (`walk`).
    pub process_tree: crate::tasks::tree::TreeMode,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME,
            max_requests_in_flight: 64,
            max_reply_bytes_in_flight: 16 * 1024 * 1024,
        }
    }
}

impl Default for TasksConfig {
    fn default() -> Self {
        Self {
            workspace_roots: directories::BaseDirs::new()
                .map(|d| vec![d.home_dir().to_owned()])
                .unwrap_or_else(|| vec![PathBuf::from("/")]),
            max_concurrent: 4,
            kill_grace_ms: 5_000,
            default_timeout_s: None,
            process_tree: Default::default(),
        }
    }
}

/// The longest OpenCode may take to start: an hour.
pub(crate) const MAX_STARTUP_TIMEOUT_S: u64 = 3600;
/// The longest a permission request may wait for an answer: a week.
pub(crate) const MAX_REQUEST_TIMEOUT_S: u64 = 7 * 24 * 3600;

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not valid: {message}")]
    Invalid { path: String, message: String },
}

impl Config {
    /// Loads `path`, or the defaults when it does not exist.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.tasks.workspace_roots.is_empty() {
            return Err("tasks.workspace_roots must name at least one directory".into());
        }
        if let Some(root) = self.tasks.workspace_roots.iter().find(|r| !r.is_absolute()) {
            return Err(format!(
                "tasks.workspace_roots entries must be absolute paths, got {}",
                root.display()
            ));
        }
        if self.tasks.max_concurrent == 0 {
            return Err("tasks.max_concurrent must be at least 1".into());
        }
        if self.limits.max_frame_bytes < 1024 {
            return Err("limits.max_frame_bytes must be at least 1024".into());
        }
        if self.limits.max_requests_in_flight == 0 {
            return Err("limits.max_requests_in_flight must be at least 1".into());
        }
        if self.limits.max_reply_bytes_in_flight < 64 * 1024 {
            return Err("limits.max_reply_bytes_in_flight must be at least 65536".into());
        }
        let net = &self.network;
        if net.max_connections == 0 || net.max_unauthenticated == 0 {
            return Err(
                "network.max_connections and network.max_unauthenticated must be at least 1".into(),
            );
        }
        if net.max_unauthenticated_per_address == 0 {
            return Err("network.max_unauthenticated_per_address must be at least 1".into());
        }
        // Added to clocks: bounded (at most a week), so that none overflows.
        let week_ms = MAX_REQUEST_TIMEOUT_S * 1000;
        for (name, value, max) in [
            ("initialize_timeout_ms", net.initialize_timeout_ms, week_ms),
            (
                "unauthenticated_idle_ms",
                net.unauthenticated_idle_ms,
                week_ms,
            ),
            ("frame_timeout_ms", net.frame_timeout_ms, week_ms),
            (
                "keepalive_timeout_s",
                net.keepalive_timeout_s,
                MAX_REQUEST_TIMEOUT_S,
            ),
        ] {
            if !(1..=max).contains(&value) {
                return Err(format!("network.{name} must be 1 to {max} (a week)"));
            }
        }
        if self.pairing.max_failures == 0 {
            return Err("pairing.max_failures must be at least 1".into());
        }
        // Durations are added to clocks: bounded, so that none overflows.
        let max_task = crate::tasks::MAX_TIMEOUT_S;
        if let Some(t) = self.tasks.default_timeout_s
            && !(1..=max_task).contains(&t)
        {
            return Err(format!(
                "tasks.default_timeout_s must be 1 to {max_task} (a year); leave it out for no timeout"
            ));
        }
        if !(1..=MAX_STARTUP_TIMEOUT_S).contains(&self.opencode.startup_timeout_s) {
            return Err(format!(
                "opencode.startup_timeout_s must be 1 to {MAX_STARTUP_TIMEOUT_S}"
            ));
        }
        if !(1..=MAX_REQUEST_TIMEOUT_S).contains(&self.permissions.request_timeout_s) {
            return Err(format!(
                "permissions.request_timeout_s must be 1 to {MAX_REQUEST_TIMEOUT_S} (a week)"
            ));
        }
        self.discovery.validate()?;
        if self.network.certificate.is_some() != self.network.key.is_some() {
            return Err(
                "network.certificate and network.key go together: give both (PEM files), or neither".into(),
            );
        }
        for address in &self.network.listen {
            if address.parse::<std::net::SocketAddr>().is_err() {
                return Err(format!(
                    "network.listen: `{address}` is not an IP:port address"
                ));
            }
        }
        Ok(())
    }

    /// The host's friendly name.
    pub(crate) fn host_name(&self) -> String {
        self.host.name.clone().unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "openwork-host".to_owned())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_gives_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::load(&dir.path().join("config.toml")).unwrap();
        assert_eq!(config.limits.max_frame_bytes, 16 * 1024 * 1024);
        assert_eq!(config.tasks.max_concurrent, 4);
    }

    #[test]
    fn typos_and_bad_values_are_reported_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[tasks]\nmax_concurent = 3\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("config.toml") && err.contains("max_concurent"),
            "{err}"
        );
        std::fs::write(&path, "[tasks]\nworkspace_roots = [\"relative\"]\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("absolute"), "{err}");
    }

    #[test]
    fn durations_that_would_overflow_a_clock_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        for (text, key) in [
            (
                "[tasks]\ndefault_timeout_s = 18446744073709551615\n",
                "default_timeout_s",
            ),
            ("[tasks]\ndefault_timeout_s = 0\n", "default_timeout_s"),
            (
                "[opencode]\nstartup_timeout_s = 18446744073709551615\n",
                "startup_timeout_s",
            ),
            (
                "[permissions]\nrequest_timeout_s = 9223372036854775808\n",
                "request_timeout_s",
            ),
            (
                "[permissions]\nrequest_timeout_s = 0\n",
                "request_timeout_s",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = Config::load(&path).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        std::fs::write(&path, "[tasks]\ndefault_timeout_s = 3600\n").unwrap();
        assert_eq!(
            Config::load(&path).unwrap().tasks.default_timeout_s,
            Some(3600)
        );
    }

    #[test]
    fn connection_budgets_and_deadlines_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        for (text, key) in [
            (
                "[network]\nmax_unauthenticated = 0\n",
                "max_unauthenticated",
            ),
            (
                "[network]\nmax_unauthenticated_per_address = 0\n",
                "max_unauthenticated_per_address",
            ),
            (
                "[network]\ninitialize_timeout_ms = 0\n",
                "initialize_timeout_ms",
            ),
            (
                "[network]\nkeepalive_timeout_s = 18446744073709551615\n",
                "keepalive_timeout_s",
            ),
            (
                "[limits]\nmax_reply_bytes_in_flight = 10\n",
                "max_reply_bytes_in_flight",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = Config::load(&path).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        // A small total with the default unauthenticated share is fine.
        std::fs::write(&path, "[network]\nmax_connections = 16\n").unwrap();
        assert_eq!(Config::load(&path).unwrap().network.max_connections, 16);
    }
}
