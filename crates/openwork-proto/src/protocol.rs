//! The wire contract: every params, result and notification type of the protocol.
//!
//! These types are the single source of `schema/` (JSON Schema via schemars)
//! and of the generated clients; handlers and services use them directly.
//! Optional members are omitted rather than sent as `null`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::scope::Scope;

/// The protocol version this host speaks.
pub const PROTOCOL_VERSION: &str = "1";

/// Params of a method that takes none: absent, or `{}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// An empty object result.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Empty {}

// ---------------------------------------------------------------- lifecycle

/// `initialize` params.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InitializeParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_info: Option<ClientInfo>,
    /// The protocol version the client speaks; the host answers with its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// A paired device's credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<DeviceAuth>,
}

/// Who the client is, for logs and the devices list.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClientInfo {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// A paired device's credential, as issued by pairing.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeviceAuth {
    pub device_id: String,
    /// A native client's token (as issued by pairing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A browser's: the nonce from `auth.challenge` on this connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// A browser's: base64url (no padding) of the raw r||s P-256/SHA-256
    /// signature over `"openwork-browser-auth-v1\n" + hostId + "\n" + origin
    /// + "\n" + nonce + "\n" + deviceId` (WebSocket connections only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// `auth.challenge` result.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthChallenge {
    /// 32 random bytes, base64url without padding: single use, on this
    /// connection only, for 60 s.
    pub nonce: String,
}

/// `initialize` result.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InitializeResult {
    pub server_info: ServerInfo,
    pub protocol_version: String,
    /// The host's stable id (base32 SHA-256 of its public key).
    pub host_id: String,
    /// The host's friendly name.
    pub host_name: String,
    pub capabilities: Capabilities,
    /// The scopes this connection holds, each with what it allows.
    pub scopes: Vec<ScopeInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerInfo {
    pub name: String,
    pub version: String,
}

/// What the host offers.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    /// Runtimes `task.run` accepts.
    pub runtimes: Vec<String>,
    /// Methods this connection may call.
    pub methods: Vec<String>,
    /// The largest frame the host accepts, in bytes.
    pub max_frame_bytes: u64,
    /// The OpenCode runtime, for connections holding the `opencode` scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opencode: Option<OpencodeCapability>,
    /// The directories tasks may run in (resolved, the default first), for
    /// connections holding `tasks.run`: a task's `cwd` must be inside one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_roots: Option<Vec<String>>,
}

/// `capabilities.get` params.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CapabilitiesParams {
    /// Wait up to this many seconds (at most 60) for OpenCode to be ready
    /// before answering, when it is starting or restarting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opencode_wait_s: Option<u64>,
}

/// OpenCode on this host.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpencodeCapability {
    /// `ready`, `starting`, `restarting`, `not_installed`, `off` or `stopped`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Operations this connection may call as `opencode.<operationId>` (when
    /// ready; `capabilities.get` gives them once OpenCode is ready).
    pub operations: Vec<String>,
}

/// A runtime's state, in the health panel.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeHealth {
    /// `builtin` or `opencode`.
    pub name: String,
    /// `ready`, `starting`, `restarting`, `not_installed`, `off` or `stopped`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// What is wrong, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A scope and what it lets its holder do.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScopeInfo {
    pub scope: Scope,
    pub description: String,
}

/// `$/cancelRequest` params: the id of the request to cancel, as sent.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequestParams {
    #[schemars(with = "serde_json::Value")]
    pub id: Box<RawValue>,
}

// ---------------------------------------------------------------- tasks

/// A task's state. Final states: succeeded, failed, cancelled, interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Queued,
    Running,
    WaitingPermission,
    Succeeded,
    Failed,
    Cancelled,
    Interrupted,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 7] = [
        TaskStatus::Queued,
        TaskStatus::Running,
        TaskStatus::WaitingPermission,
        TaskStatus::Succeeded,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
        TaskStatus::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::WaitingPermission => "waiting_permission",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
            TaskStatus::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<TaskStatus> {
        TaskStatus::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Whether the task has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskStatus::Succeeded
                | TaskStatus::Failed
                | TaskStatus::Cancelled
                | TaskStatus::Interrupted
        )
    }
}

/// `task.run` params.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TaskRunParams {
    /// `builtin` (default) or `opencode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Program and arguments, run directly (no shell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    /// A command line run by `/bin/sh -c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Working directory: absolute, or relative to the first workspace root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Extra environment variables (never stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Seconds before the task is stopped and marked failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    /// A key chosen by the client: running the same key again returns the first task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// OpenCode: the prompt to send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// OpenCode: an existing session to continue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// OpenCode: `provider/model` to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// OpenCode: the agent to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

/// `task.run` result.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskRunResult {
    pub task_id: String,
    pub status: TaskStatus,
}

/// Params naming one task.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TaskIdParams {
    pub task_id: String,
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskRecord {
    pub task_id: String,
    pub status: TaskStatus,
    pub runtime: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    pub cwd: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    /// The exit code, once the process has exited normally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that ended the process, e.g. `SIGKILL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// Why the task failed, was cancelled or interrupted, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// RFC 3339 UTC times.
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The seq of the last stored log chunk (0 when none).
    pub last_seq: u64,
    /// OpenCode tasks: the prompt sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// OpenCode tasks: the session the prompt went to (continue it with `sessionId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Who started it: `local` (the owner) or `device:ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
}

/// `task.list` params.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TaskListParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskStatus>,
    /// At most this many (default 50, at most 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Only tasks created before this task id (the last id of the previous page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
}

/// `task.list` result, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskListResult {
    pub tasks: Vec<TaskRecord>,
}

/// `task.subscribe` params.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TaskSubscribeParams {
    pub task_id: String,
    /// First seq to replay (default 1). Past the end means live only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_seq: Option<u64>,
}

/// `task.subscribe` result; chunks from `fromSeq` follow as `log.chunk`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskSubscribeResult {
    pub task_id: String,
    pub status: TaskStatus,
    /// The seq replay starts from (the requested one, capped at `lastSeq + 1`).
    pub from_seq: u64,
    /// The last seq stored when the subscription began.
    pub last_seq: u64,
}

/// `task.unsubscribe` result.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskUnsubscribeResult {
    /// Whether this connection was subscribed.
    pub was_subscribed: bool,
}

/// `task.logs` params.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TaskLogsParams {
    pub task_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_seq: Option<u64>,
    /// At most this many chunks (default 100, at most 1000; pages also stop near 4 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `task.logs` result.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskLogsResult {
    pub chunks: Vec<LogChunk>,
    /// The seq to ask for next.
    pub next_seq: u64,
    /// True when the task has ended and every chunk has been returned.
    pub done: bool,
}

/// Which output a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    Stdout,
    Stderr,
    /// Structured runtime events (OpenCode).
    Event,
}

impl LogStream {
    pub fn code(self) -> i64 {
        match self {
            LogStream::Stdout => 0,
            LogStream::Stderr => 1,
            LogStream::Event => 2,
        }
    }

    pub fn from_code(code: i64) -> LogStream {
        match code {
            0 => LogStream::Stdout,
            1 => LogStream::Stderr,
            _ => LogStream::Event,
        }
    }
}

/// `log.chunk` notification params: a piece of a task's output.
///
/// `data` is the text. When the bytes are not valid UTF-8, `data` holds them
/// with U+FFFD for each invalid sequence and `dataBase64` the exact bytes.
/// Chunks are at most 64 KiB and never split a UTF-8 sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogChunk {
    pub task_id: String,
    /// Starts at 1, no gaps, per task.
    pub seq: u64,
    pub stream: LogStream,
    pub data: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
    /// RFC 3339 UTC time the host read the bytes.
    pub ts: String,
}

/// `task.updated` notification params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskUpdate {
    pub task_id: String,
    pub status: TaskStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

// ---------------------------------------------------------------- health & metrics

/// Counts of tasks by status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskCounts {
    pub queued: u64,
    pub running: u64,
    pub waiting_permission: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub interrupted: u64,
}

impl TaskCounts {
    pub fn add(&mut self, status: TaskStatus, n: u64) {
        let slot = match status {
            TaskStatus::Queued => &mut self.queued,
            TaskStatus::Running => &mut self.running,
            TaskStatus::WaitingPermission => &mut self.waiting_permission,
            TaskStatus::Succeeded => &mut self.succeeded,
            TaskStatus::Failed => &mut self.failed,
            TaskStatus::Cancelled => &mut self.cancelled,
            TaskStatus::Interrupted => &mut self.interrupted,
        };
        *slot += n;
    }
}

/// `health.get` result: the health panel.
///
/// Anyone may call it; without `tasks.read` only the identity, version,
/// uptime and overall `status` are filled in.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    /// `ok`, `degraded` (it works, with less: a warning check fails) or
    /// `error` (it cannot do its work: an error check fails).
    pub status: String,
    pub version: String,
    pub host_id: String,
    pub host_name: String,
    /// SHA-256 of the host's TLS certificate (hex), for pinning.
    pub fingerprint: String,
    /// Seconds since this run of the host started.
    pub uptime_s: u64,
    pub started_at: String,
    /// Where the host listens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listeners: Option<Vec<Listener>>,
    /// Each runtime's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtimes: Option<Vec<RuntimeHealth>>,
    /// Details, for callers with `tasks.read`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<String>,
    /// Tasks by status, all time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<TaskCounts>,
    /// Connections open now, all transports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u64>,
    /// The task that finished last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_task: Option<TaskRecord>,
    /// The pairing window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairing: Option<PairingHealth>,
    /// Every check, in a fixed order; `status` follows from them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<Vec<HealthCheck>>,
    /// The LAN advertisement (mDNS); always sent by this host, absent from older ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<DiscoveryHealth>,
}

/// The host's mDNS / DNS-SD advertisement, in `health.get`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveryHealth {
    /// `advertising`, `starting` (probing, not announced yet), `off` or `failed`.
    pub state: String,
    /// The DNS-SD service type, `_openwork._tcp.local.`.
    pub service: String,
    /// The instance name advertised: the host's friendly name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Why it is off, or what failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What to do about a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

/// One health check: a thing the host needs, whether it holds, and what to do when not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// `store`, `disk`, `listeners`, `mdns`, `runtime.builtin`,
    /// `runtime.opencode`, `recent_failures` (and, from `doctor`, `daemon`,
    /// `data_dir`, `config`).
    pub name: String,
    pub ok: bool,
    /// What a failure means: `error` (the host cannot do its work) or `warning` (it works, with less).
    pub severity: CheckSeverity,
    /// What was found, in words.
    pub message: String,
    /// What a person can do about it; present when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

impl HealthCheck {
    /// A check that holds.
    pub fn pass(name: &str, severity: CheckSeverity, message: impl Into<String>) -> HealthCheck {
        HealthCheck {
            name: name.to_owned(),
            ok: true,
            severity,
            message: message.into(),
            action: None,
        }
    }

    /// A check that fails, with what to do.
    pub fn fail(
        name: &str,
        severity: CheckSeverity,
        message: impl Into<String>,
        action: impl Into<String>,
    ) -> HealthCheck {
        HealthCheck {
            name: name.to_owned(),
            ok: false,
            severity,
            message: message.into(),
            action: Some(action.into()),
        }
    }
}

/// How much a failing check matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CheckSeverity {
    /// The host cannot do its work: the overall status becomes `error`.
    Error,
    /// The host works, with less: the overall status becomes `degraded`.
    Warning,
}

/// The pairing window, in the health panel.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PairingHealth {
    pub open: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Devices waiting for the owner's approval.
    pub pending: u32,
}

/// `metrics.get` result: local counters, kept in the host's store and never sent anywhere.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsReport {
    /// Seconds since this run of the host started.
    pub uptime_s: u64,
    /// Seconds the host has run in total, across restarts (while telemetry was on).
    pub total_uptime_s: u64,
    /// Whether counters are being recorded (`[metrics] telemetry` in config.toml).
    pub telemetry: bool,
    pub connections: ConnectionCounts,
    /// Tasks by status, all time (from the task records).
    pub tasks: TaskCounts,
    /// Outcomes of the tasks that finished in the last 24 hours.
    pub last_24h: TaskOutcomes,
    /// Outcomes of the tasks that finished in the last 7 days.
    pub last_7d: TaskOutcomes,
}

/// Connection counters since the data dir was created (while telemetry was on).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionCounts {
    /// Connections accepted, all transports.
    pub accepted: u64,
    /// Connections open now.
    pub active: u64,
    /// Connections that ended, for any reason.
    pub disconnects: u64,
    /// TLS handshakes that failed or timed out.
    #[serde(default)]
    pub handshake_failures: u64,
    /// Failed authentications and calls refused for lack of one.
    #[serde(default)]
    pub auth_failures: u64,
    /// Connections refused at `network.max_connections`.
    #[serde(default)]
    pub refused: u64,
}

/// How the tasks that finished in a time window ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskOutcomes {
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub interrupted: u64,
    /// `succeeded / (succeeded + failed + interrupted)`; cancelled tasks are
    /// left out (a person stopped them). Absent when no such task finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<f64>,
}

impl TaskOutcomes {
    /// Counts one outcome; other statuses are ignored.
    pub fn add(&mut self, status: TaskStatus, n: u64) {
        match status {
            TaskStatus::Succeeded => self.succeeded += n,
            TaskStatus::Failed => self.failed += n,
            TaskStatus::Cancelled => self.cancelled += n,
            TaskStatus::Interrupted => self.interrupted += n,
            _ => {}
        }
        let judged = self.succeeded + self.failed + self.interrupted;
        self.success_rate = (judged > 0).then(|| self.succeeded as f64 / judged as f64);
    }
}

// ---------------------------------------------------------------- pairing & devices

/// `pairing.open` params (operator, local).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PairingOpenParams {
    /// How long the code is valid (default 300, at most 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
    /// The most a device paired through this window may get (default: every scope but `admin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<Scope>>,
    /// The address devices should connect to (default: this machine's LAN address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Close a window that is already open and open this one instead
    /// (without it, an open window makes `pairing.open` fail with -32004).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace: Option<bool>,
}

/// An open pairing window, as the operator sees it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PairingWindow {
    /// The single-use code to type on the device.
    pub code: String,
    pub expires_at: String,
    pub scopes: Vec<Scope>,
    /// `openwork://pair?host=…&port=…&fp=…&code=…`, also shown as a QR code.
    pub uri: String,
    pub host: String,
    pub port: u16,
    pub fingerprint: String,
    pub host_id: String,
    pub host_name: String,
    /// `https://HOST:PORT/#pair?code=…&fp=…&id=…`: the link a phone's camera
    /// opens (the web app's pairing screen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_uri: Option<String>,
    /// The QR code of `webUri`, row by row, top to bottom: `1` a dark
    /// module, `0` a light one (no quiet zone), for a screen to draw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_qr: Option<Vec<String>>,
}

/// `pairing.begin` params: the device's SPAKE2 message.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PairingBeginParams {
    /// Shown to the host's owner when they approve.
    pub device_name: String,
    /// Scopes asked for (default: all the window offers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<Scope>>,
    /// The SPAKE2 message (side A), base64.
    pub spake: String,
    /// A browser's credential to register (WebSocket connections only, where
    /// it is required): its P-256 public key, SPKI DER, base64url without
    /// padding. It is one more transcript item after the scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

/// `pairing.begin` result.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PairingBeginResult {
    pub exchange_id: String,
    /// The host's SPAKE2 message (side B), base64.
    pub spake: String,
    /// The host's key confirmation, base64.
    pub host_confirm: String,
    /// The scopes the transcript covers: what was asked, within what the window offers.
    pub scopes: Vec<Scope>,
}

/// `pairing.confirm` params.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PairingConfirmParams {
    pub exchange_id: String,
    /// The device's key confirmation, base64.
    pub client_confirm: String,
}

/// `pairing.confirm` result, once the host's owner approved: the device's credential.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PairingResult {
    pub device_id: String,
    /// 256 random bits, base64url; the host keeps only its hash. Absent for
    /// a browser, whose credential is the key it registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    pub scopes: Vec<Scope>,
    pub host_id: String,
    pub host_name: String,
    /// The certificate fingerprint to pin.
    pub fingerprint: String,
}

/// A device waiting for the owner's approval (`pairing.requested`, and in `pairing.status`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PairingRequest {
    pub request_id: String,
    pub device_name: String,
    pub scopes: Vec<ScopeInfo>,
    /// Where the device connects from.
    pub address: String,
    pub expires_at: String,
}

/// `pairing.status` result.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PairingStatus {
    pub open: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Wrong codes so far in this window.
    pub failures: u32,
    pub max_failures: u32,
    pub pending: Vec<PairingRequest>,
    /// Why the last window closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_reason: Option<String>,
}

/// `pairing.approve` params.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PairingApproveParams {
    pub request_id: String,
    /// Grant fewer scopes than asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<Scope>>,
}

/// `pairing.deny` params.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PairingRequestIdParams {
    pub request_id: String,
}

/// `pairing.failed` notification (to the operator): a wrong code was tried.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PairingFailed {
    pub address: String,
    pub device_name: String,
    pub failures: u32,
    pub remaining: u32,
}

/// `pairing.closed` notification (to the operator).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PairingClosed {
    /// `paired`, `expired`, `too many wrong codes`, `closed by the owner`, `replaced by a new window`, `denied by the owner`.
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
}

/// `pairing.withdrawn` notification (to the operator): a device waiting for
/// approval is gone, so its request can no longer be approved.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PairingWithdrawn {
    pub request_id: String,
    pub device_name: String,
    pub address: String,
    /// Why: `the device disconnected`, `the device cancelled`, `no approval in time`.
    pub reason: String,
    /// Whether the window is still open for another try with the same code.
    pub window_open: bool,
}

/// A paired device.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceInfo {
    pub device_id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub paired_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// Connections open now.
    pub connections: u32,
}

/// `devices.list` result.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DevicesListResult {
    pub devices: Vec<DeviceInfo>,
}

/// Params naming a device.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeviceIdParams {
    pub device_id: String,
}

/// `permission.pending` result.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PermissionPendingResult {
    /// The requests waiting for an answer, the one expiring first first.
    pub requests: Vec<PermissionRequest>,
}

/// `devices.revoke` result.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRevokeResult {
    pub device_id: String,
    /// Live connections that were closed.
    pub closed_connections: u32,
}

/// A listener the host serves on.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    /// `tls` or `unix`.
    pub transport: String,
    /// `ip:port` or a socket path.
    pub address: String,
}

// ---------------------------------------------------------------- permissions

/// An answer to a permission request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Allow this time.
    Once,
    /// Allow, and remember a rule so that the same thing is not asked again.
    Always,
    /// Do not allow; the task is cancelled.
    Reject,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Once => "once",
            Decision::Always => "always",
            Decision::Reject => "reject",
        }
    }
}

/// `permission.request` notification: a task waits for a person's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PermissionRequest {
    pub request_id: String,
    pub task_id: String,
    /// What asks: `command` for the built-in runner, OpenCode's tool name otherwise.
    pub tool: String,
    /// One line: what will happen.
    pub summary: String,
    /// The full picture: the command, where, and why this asks.
    pub detail: String,
    /// The answers offered.
    pub options: Vec<Decision>,
    /// What answering `always` will allow from now on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub always: Option<String>,
    pub expires_at: String,
}

/// `permission.resolved` notification: someone answered (or no one did in time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PermissionResolved {
    pub request_id: String,
    pub task_id: String,
    pub decision: Decision,
    /// Who answered: a device's name, `the host's owner`, or why it ended (`no answer in time`).
    pub by: String,
}

/// `permission.reply` params.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PermissionReplyParams {
    pub request_id: String,
    pub decision: Decision,
}

/// `permission.reply` result.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PermissionReplyResult {
    pub request_id: String,
    pub decision: Decision,
    /// The rules remembered, for `always` (see `permission.rules`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rule_ids: Vec<String>,
}

/// A remembered "always" rule.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PermissionRule {
    pub rule_id: String,
    /// `builtin` or `opencode`.
    pub runtime: String,
    /// What it allows, in words.
    pub description: String,
    /// The policy rule (built-in) or OpenCode permission it answers.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// It applies in this directory and below.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    pub created_at: String,
    pub created_by: String,
}

/// `permission.rules` result.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PermissionRulesResult {
    pub rules: Vec<PermissionRule>,
}

/// `permission.forget` params.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PermissionForgetParams {
    pub rule_id: String,
}

/// `permission.audit` params.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PermissionAuditParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// At most this many entries, newest first (default 100, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Entries older than this entry id (paging).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<i64>,
    /// Only entries about this device: it started the task or it answered
    /// (`local` for the owner, or a device id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Only entries with this decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
}

/// One audit entry.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub entry_id: i64,
    pub at: String,
    pub task_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// `denied`, `requested`, `allowed by rule`, `decided`, `expired`, `withdrawn`.
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// Who answered: `local`, `device:ID`, or `opencode` (answered in OpenCode
    /// itself); absent when the host decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The rules involved, comma-separated: for `requested`, the policy rules
    /// that made it ask (`opencode:PERMISSION` when OpenCode's own
    /// configuration asked); for `denied` and `allowed by rule`, the rule
    /// applied; for `decided` with `always`, the remembered rules created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub summary: String,
    /// Who started the task: `local` or `device:ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_started_by: Option<String>,
}

/// `permission.audit` result.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PermissionAuditResult {
    pub entries: Vec<AuditEntry>,
}

// ---------------------------------------------------------------- the owner's console

/// `console.link` params (the owner, local).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConsoleLinkParams {
    /// How long the link works (default 120, 1 to 600 seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
}

/// A one-time link that enrols a browser on this machine as the owner's console.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsoleLink {
    /// `https://localhost:PORT/#console?secret=…&fp=…&id=…`; the secret is in
    /// the fragment, which a browser never sends over the network.
    pub url: String,
    pub expires_at: String,
    pub port: u16,
    pub fingerprint: String,
    pub host_id: String,
}

/// `console.enrol` params: a browser on this machine redeems a one-time link.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConsoleEnrolParams {
    /// The secret from the link's fragment.
    pub secret: String,
    /// The browser's P-256 public key (SPKI DER, base64url), as in `pairing.begin`.
    pub public_key: String,
    /// What the device list calls this browser (default "Owner's console").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
}

/// A setting the console explains: where it is, its value now, what it means.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SettingInfo {
    /// `[section] key` in config.toml.
    pub name: String,
    pub value: String,
    pub meaning: String,
}

/// One rule of the command policy, as configured (read-only).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRuleInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `allow`, `ask` or `deny`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    pub explain: String,
    /// `config` (the owner's, checked first) or `default`.
    pub source: String,
}

/// `console.overview` result: what the owner's console needs to guide set-up.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsoleOverview {
    pub host_name: String,
    pub host_id: String,
    pub fingerprint: String,
    pub data_dir: String,
    /// Where the settings live (it may not exist yet: every setting is optional).
    pub config_path: String,
    pub config_exists: bool,
    /// The address phones are given in pairing links, and the TLS port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lan_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Whether `lanAddress` is a loopback address (a phone cannot reach it).
    pub lan_address_is_loopback: bool,
    /// How OpenCode is set up: `off`, `auto` or `on`, and how to install it.
    pub opencode_enabled: String,
    pub opencode_install: String,
    pub settings: Vec<SettingInfo>,
    /// The command policy's rules, in the order they are checked.
    pub policy: Vec<PolicyRuleInfo>,
}

/// `metrics.series` params.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetricsSeriesParams {
    /// How many hours back, ending with the current hour (default 24, 1 to 168).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<u32>,
}

/// One hour of the host's activity.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsBucket {
    /// The hour's start (UTC).
    pub start: String,
    /// Tasks that finished in the hour, by outcome.
    pub tasks: TaskOutcomes,
    pub connections: u64,
    pub disconnects: u64,
    pub handshake_failures: u64,
    pub auth_failures: u64,
    pub refused: u64,
}

/// `metrics.series` result: hourly buckets, oldest first, every hour present.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSeries {
    pub bucket_s: u64,
    pub buckets: Vec<MetricsBucket>,
    /// Whether connection counters are recorded (`[metrics] telemetry`).
    pub telemetry: bool,
}
