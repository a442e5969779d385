//! What a method handler may ask of the host (`HostCalls`): the host
//! implements it (host/calls.rs says what each call does), so that the
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

/// The host, as the method handlers see it. The calls are the host's own
/// (`HostCore`'s methods of the same names); asynchronous ones are boxed so
/// that a handler holds the host as `dyn HostCalls`.
pub trait HostCalls: Send + Sync {
    fn config(&self) -> &Config;
    fn data_dir(&self) -> &DataDir;
    fn host_id(&self) -> &str;
    fn host_name(&self) -> &str;
    fn fingerprint(&self) -> &str;
    fn methods(&self) -> &MethodTable<CallContext>;
    fn workspace_dir(&self, dir: Option<&str>) -> Result<PathBuf, TaskError>;
    fn workspace_roots(&self) -> &[PathBuf];
    fn pending_permission_requests(&self) -> Vec<PermissionRequest>;
    fn begin_pairing(
        &self,
        session: &Session,
        params: PairingBeginParams,
    ) -> Result<PairingBeginResult, PairingError>;
    fn open_pairing_window(&self, params: PairingOpenParams)
    -> Result<PairingWindow, PairingError>;
    fn pairing_events(&self) -> broadcast::Receiver<Bytes>;
    fn close_pairing_window(&self, reason: &str) -> bool;
    fn pairing_status(&self) -> PairingStatus;
    fn opencode_error(&self, e: ApiError) -> RpcError;
    fn console_link(&self, ttl_s: Option<u64>) -> Result<ConsoleLink, ConsoleError>;
    fn pairing_endpoint(&self) -> Option<Endpoint>;
    fn telemetry(&self) -> bool;
    fn opencode_capability(&self, principal: &Principal) -> OpencodeCapability;
    fn owner_may_act(&self, principal: &Principal) -> bool;
    fn listeners(&self) -> Vec<Listener>;
    fn runtimes(&self) -> Vec<RuntimeHealth>;
    fn run_task<'a>(
        &'a self,
        params: TaskRunParams,
        by: &'a Principal,
    ) -> BoxFuture<'a, Result<(TaskRunResult, Feed), TaskError>>;
    fn cancel_task<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<TaskRecord, TaskError>>;
    fn task<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<TaskRecord, TaskError>>;
    fn list_tasks<'a>(
        &'a self,
        p: TaskListParams,
    ) -> BoxFuture<'a, Result<Vec<TaskRecord>, TaskError>>;
    fn follow_task<'a>(
        &'a self,
        task_id: &'a str,
        from_seq: Option<u64>,
    ) -> BoxFuture<'a, Result<(Feed, FeedStart), TaskError>>;
    fn task_logs<'a>(
        &'a self,
        p: TaskLogsParams,
    ) -> BoxFuture<'a, Result<TaskLogsResult, TaskError>>;
    fn reply_permission<'a>(
        &'a self,
        p: PermissionReplyParams,
        session: &'a Session,
    ) -> BoxFuture<'a, Result<PermissionReplyResult, PermissionError>>;
    fn permission_rules<'a>(&'a self) -> BoxFuture<'a, Result<Vec<PermissionRule>, StoreError>>;
    fn forget_permission_rule<'a>(
        &'a self,
        rule_id: &'a str,
    ) -> BoxFuture<'a, Result<(), PermissionError>>;
    fn permission_audit<'a>(
        &'a self,
        params: PermissionAuditParams,
    ) -> BoxFuture<'a, Result<Vec<AuditEntry>, StoreError>>;
    fn confirm_pairing<'a>(
        &'a self,
        session: &'a Session,
        params: PairingConfirmParams,
    ) -> BoxFuture<'a, Result<PairingResult, PairingError>>;
    fn approve_pairing<'a>(
        &'a self,
        request_id: &'a str,
        scopes: Option<Vec<Scope>>,
    ) -> BoxFuture<'a, Result<DeviceInfo, PairingError>>;
    fn deny_pairing<'a>(&'a self, request_id: &'a str) -> BoxFuture<'a, Result<(), PairingError>>;
    fn paired_devices<'a>(&'a self) -> BoxFuture<'a, Result<Vec<DeviceInfo>, StoreError>>;
    fn opencode_api<'a>(
        &'a self,
        wait: Duration,
    ) -> BoxFuture<'a, Result<(ApiClient, Arc<Operations>), Unavailable>>;
    fn console_enrol<'a>(
        &'a self,
        session: &'a Session,
        params: ConsoleEnrolParams,
    ) -> BoxFuture<'a, Result<PairingResult, ConsoleError>>;
    fn task_outcomes_by_hour<'a>(
        &'a self,
        since_ms: i64,
    ) -> BoxFuture<'a, Result<HourCounts<TaskStatus>, TaskError>>;
    fn metric_hours<'a>(
        &'a self,
        since_ms: i64,
    ) -> BoxFuture<'a, Result<HourCounts<String>, StoreError>>;
    fn authenticate_session<'a>(
        &'a self,
        session: &'a Session,
        auth: &'a DeviceAuth,
    ) -> BoxFuture<'a, Result<Principal, RpcError>>;
    fn revoke_device<'a>(
        &'a self,
        device_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<(Device, u32)>, StoreError>>;
    fn metrics_report<'a>(&'a self) -> BoxFuture<'a, Result<MetricsReport, StoreError>>;
    fn health<'a>(&'a self, details: bool) -> BoxFuture<'a, HealthReport>;
    fn wait_for_opencode<'a>(&'a self, wait: Duration) -> BoxFuture<'a, ()>;
}
