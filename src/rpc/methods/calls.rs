//! What a method handler may ask of the host (`HostCalls`): the host
//! implements it (host/calls.rs), so that the
//! handlers never name the host.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::broadcast;

use crate::auth::{Principal, Scope};
use crate::config::Config;
use crate::datadir::DataDir;
use crate::devices::Device;
use crate::pairing::console::ConsoleError;
use crate::pairing::{Endpoint, PairingError};
use crate::permissions::PermissionError;
use crate::protocol::{
    AuditEntry, ConsoleEnrolParams, ConsoleLink, DeviceAuth, DeviceInfo, HealthReport, Listener,
    MetricsReport, OpencodeCapability, PairingBeginParams, PairingBeginResult,
    PairingConfirmParams, PairingOpenParams, PairingResult, PairingStatus, PairingWindow,
    PermissionAuditParams, PermissionReplyParams, PermissionReplyResult, PermissionRequest,
    PermissionRule, RuntimeHealth, TaskListParams, TaskLogsParams, TaskLogsResult, TaskRecord,
    TaskRunParams, TaskRunResult, TaskStatus,
};
use crate::rpc::{MethodTable, RpcError};
use crate::runtime::opencode::{ApiClient, ApiError, Operations, Unavailable};
use crate::session::Session;
use crate::store::StoreError;
use crate::tasks::{Feed, FeedStart, TaskError};

use super::CallContext;

/// Counts by hour: (the hour's start in ms, what was counted, how many).
pub type HourCounts<T> = Vec<(i64, T, u64)>;

/// The host, as the method handlers see it (host/calls.rs implements it);
/// asynchronous calls are boxed so that a handler holds the host as
/// `dyn HostCalls`.
pub trait HostCalls: Send + Sync {
    /// The configuration the host runs with (read only).
    fn config(&self) -> &Config;
    /// The data dir the host runs in.
    fn data_dir(&self) -> &DataDir;
    /// The host's id, as devices know it.
    fn host_id(&self) -> &str;
    /// The host's name, as devices are shown it.
    fn host_name(&self) -> &str;
    /// The fingerprint of the host's certificate.
    fn fingerprint(&self) -> &str;
    /// Every method the host serves.
    fn methods(&self) -> &MethodTable<CallContext>;
    /// `dir` resolved inside the workspace roots (the first root if `None`).
    fn workspace_dir(&self, dir: Option<&str>) -> Result<PathBuf, TaskError>;
    /// The directories tasks may run in, the default first.
    fn workspace_roots(&self) -> &[PathBuf];
    /// The permission requests waiting for an answer, soonest to expire first.
    fn pending_permission_requests(&self) -> Vec<PermissionRequest>;
    /// A device's first pairing message, on `session`.
    fn begin_pairing(
        &self,
        session: &Session,
        params: PairingBeginParams,
    ) -> Result<PairingBeginResult, PairingError>;
    /// Opens a pairing window with a fresh code.
    fn open_pairing_window(&self, params: PairingOpenParams)
    -> Result<PairingWindow, PairingError>;
    /// The pairing window's notifications (requests, wrong codes, closing).
    fn pairing_events(&self) -> broadcast::Receiver<Bytes>;
    /// Closes the pairing window.
    fn close_pairing_window(&self, reason: &str) -> bool;
    /// The pairing window and the devices waiting for approval.
    fn pairing_status(&self) -> PairingStatus;
    /// A failed call to OpenCode as a JSON-RPC error, with what to do about it.
    fn opencode_error(&self, e: ApiError) -> RpcError;
    /// A one-time link enrolling a browser on this machine as the owner's
    /// console, for the first TLS listener that takes loopback.
    fn console_link(&self, ttl_s: Option<u64>) -> Result<ConsoleLink, ConsoleError>;
    /// The address and port a pairing link gives devices, when there is one.
    fn pairing_endpoint(&self) -> Option<Endpoint>;
    /// Whether the owner lets the host keep its local metrics.
    fn telemetry(&self) -> bool;
    /// What OpenCode offers `principal` now (whether it is installed, ready, allowed).
    fn opencode_capability(&self, principal: &Principal) -> OpencodeCapability;
    /// Whether `principal` may call the owner's methods.
    fn owner_may_act(&self, principal: &Principal) -> bool;
    /// Where the host listens.
    fn listeners(&self) -> Vec<Listener>;
    /// Each runtime and its state, for the health panel.
    fn runtimes(&self) -> Vec<RuntimeHealth>;
    /// Starts a task for `by`; its feed follows it from its first chunk.
    fn run_task<'a>(
        &'a self,
        params: TaskRunParams,
        by: &'a Principal,
    ) -> BoxFuture<'a, Result<(TaskRunResult, Feed), TaskError>>;
    /// Stops a task.
    fn cancel_task<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<TaskRecord, TaskError>>;
    /// A task's record.
    fn task<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<TaskRecord, TaskError>>;
    /// Tasks, newest first, by page.
    fn list_tasks<'a>(
        &'a self,
        p: TaskListParams,
    ) -> BoxFuture<'a, Result<Vec<TaskRecord>, TaskError>>;
    /// Follows a task from `from_seq`: its stored log, then live.
    fn follow_task<'a>(
        &'a self,
        task_id: &'a str,
        from_seq: Option<u64>,
    ) -> BoxFuture<'a, Result<(Feed, FeedStart), TaskError>>;
    /// A page of a task's stored log.
    fn task_logs<'a>(
        &'a self,
        p: TaskLogsParams,
    ) -> BoxFuture<'a, Result<TaskLogsResult, TaskError>>;
    /// Answers a permission request for whoever calls on `session`.
    fn reply_permission<'a>(
        &'a self,
        p: PermissionReplyParams,
        session: &'a Session,
    ) -> BoxFuture<'a, Result<PermissionReplyResult, PermissionError>>;
    /// The remembered `always` rules.
    fn permission_rules<'a>(&'a self) -> BoxFuture<'a, Result<Vec<PermissionRule>, StoreError>>;
    /// Forgets a remembered rule.
    fn forget_permission_rule<'a>(
        &'a self,
        rule_id: &'a str,
    ) -> BoxFuture<'a, Result<(), PermissionError>>;
    /// The permission audit trail, newest first.
    fn permission_audit<'a>(
        &'a self,
        params: PermissionAuditParams,
    ) -> BoxFuture<'a, Result<Vec<AuditEntry>, StoreError>>;
    /// A device's key confirmation, on `session`; waits for the owner's
    /// approval unless the device goes away first.
    fn confirm_pairing<'a>(
        &'a self,
        session: &'a Session,
        params: PairingConfirmParams,
    ) -> BoxFuture<'a, Result<PairingResult, PairingError>>;
    /// Approves a waiting device, maybe with fewer scopes.
    fn approve_pairing<'a>(
        &'a self,
        request_id: &'a str,
        scopes: Option<Vec<Scope>>,
    ) -> BoxFuture<'a, Result<DeviceInfo, PairingError>>;
    /// Refuses a waiting device.
    fn deny_pairing<'a>(&'a self, request_id: &'a str) -> BoxFuture<'a, Result<(), PairingError>>;
    /// Paired devices, each with the connections it has open now.
    fn paired_devices<'a>(&'a self) -> BoxFuture<'a, Result<Vec<DeviceInfo>, StoreError>>;
    /// OpenCode's API and its operations, once it is ready (waiting up to `wait`).
    fn opencode_api<'a>(
        &'a self,
        wait: Duration,
    ) -> BoxFuture<'a, Result<(ApiClient, Arc<Operations>), Unavailable>>;
    /// Redeems a console link for the browser on `session`; a link that does
    /// not work counts as a failed authentication.
    fn console_enrol<'a>(
        &'a self,
        session: &'a Session,
        params: ConsoleEnrolParams,
    ) -> BoxFuture<'a, Result<PairingResult, ConsoleError>>;
    /// Tasks finished per hour since `since_ms`, by outcome.
    fn task_outcomes_by_hour<'a>(
        &'a self,
        since_ms: i64,
    ) -> BoxFuture<'a, Result<HourCounts<TaskStatus>, TaskError>>;
    /// The host's counters per hour since `since_ms`.
    fn metric_hours<'a>(
        &'a self,
        since_ms: i64,
    ) -> BoxFuture<'a, Result<HourCounts<String>, StoreError>>;
    /// Authenticates the device on `session` (`auth.hello`).
    fn authenticate_session<'a>(
        &'a self,
        session: &'a Session,
        auth: &'a DeviceAuth,
    ) -> BoxFuture<'a, Result<Principal, RpcError>>;
    /// Revokes a device and cuts its connections off: the device and how many.
    fn revoke_device<'a>(
        &'a self,
        device_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<(Device, u32)>, StoreError>>;
    /// The local metrics (`metrics.get`).
    fn metrics_report<'a>(&'a self) -> BoxFuture<'a, Result<MetricsReport, StoreError>>;
    /// The health panel (`health.get`), with every check when `details`.
    fn health<'a>(&'a self, details: bool) -> BoxFuture<'a, HealthReport>;
    /// Waits up to `wait` for OpenCode to be ready, if it is configured at
    /// all; not ready in time is no error.
    fn wait_for_opencode<'a>(&'a self, wait: Duration) -> BoxFuture<'a, ()>;
}
