//! `rpc::methods::HostCalls` for `HostCore`: what a method handler may ask
//! of the host, forwarded to the calls of the same names.

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
use crate::rpc::methods::{CallContext, HostCalls, HourCounts};
use crate::rpc::{MethodTable, RpcError};
use crate::runtime::opencode::{ApiClient, ApiError, Operations, Unavailable};
use crate::session::Session;
use crate::store::StoreError;
use crate::tasks::{Feed, FeedStart, TaskError};

use super::HostCore;

impl HostCalls for HostCore {
    fn config(&self) -> &Config {
        HostCore::config(self)
    }

    fn data_dir(&self) -> &DataDir {
        HostCore::data_dir(self)
    }

    fn host_id(&self) -> &str {
        HostCore::host_id(self)
    }

    fn host_name(&self) -> &str {
        HostCore::host_name(self)
    }

    fn fingerprint(&self) -> &str {
        HostCore::fingerprint(self)
    }

    fn methods(&self) -> &MethodTable<CallContext> {
        HostCore::methods(self)
    }

    fn workspace_dir(&self, dir: Option<&str>) -> Result<PathBuf, TaskError> {
        HostCore::workspace_dir(self, dir)
    }

    fn workspace_roots(&self) -> &[PathBuf] {
        HostCore::workspace_roots(self)
    }

    fn pending_permission_requests(&self) -> Vec<PermissionRequest> {
        HostCore::pending_permission_requests(self)
    }

    fn begin_pairing(
        &self,
        session: &Session,
        params: PairingBeginParams,
    ) -> Result<PairingBeginResult, PairingError> {
        HostCore::begin_pairing(self, session, params)
    }

    fn open_pairing_window(
        &self,
        params: PairingOpenParams,
    ) -> Result<PairingWindow, PairingError> {
        HostCore::open_pairing_window(self, params)
    }

    fn pairing_events(&self) -> broadcast::Receiver<Bytes> {
        HostCore::pairing_events(self)
    }

    fn close_pairing_window(&self, reason: &str) -> bool {
        HostCore::close_pairing_window(self, reason)
    }

    fn pairing_status(&self) -> PairingStatus {
        HostCore::pairing_status(self)
    }

    fn opencode_error(&self, e: ApiError) -> RpcError {
        HostCore::opencode_error(self, e)
    }

    fn console_link(&self, ttl_s: Option<u64>) -> Result<ConsoleLink, ConsoleError> {
        HostCore::console_link(self, ttl_s)
    }

    fn pairing_endpoint(&self) -> Option<Endpoint> {
        HostCore::pairing_endpoint(self)
    }

    fn telemetry(&self) -> bool {
        HostCore::telemetry(self)
    }

    fn opencode_capability(&self, principal: &Principal) -> OpencodeCapability {
        HostCore::opencode_capability(self, principal)
    }

    fn owner_may_act(&self, principal: &Principal) -> bool {
        HostCore::owner_may_act(self, principal)
    }

    fn run_task<'a>(
        &'a self,
        params: TaskRunParams,
        by: &'a Principal,
    ) -> BoxFuture<'a, Result<(TaskRunResult, Feed), TaskError>> {
        Box::pin(HostCore::run_task(self, params, by))
    }

    fn cancel_task<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<TaskRecord, TaskError>> {
        Box::pin(HostCore::cancel_task(self, task_id))
    }

    fn task<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<TaskRecord, TaskError>> {
        Box::pin(HostCore::task(self, task_id))
    }

    fn list_tasks<'a>(
        &'a self,
        p: TaskListParams,
    ) -> BoxFuture<'a, Result<Vec<TaskRecord>, TaskError>> {
        Box::pin(HostCore::list_tasks(self, p))
    }

    fn follow_task<'a>(
        &'a self,
        task_id: &'a str,
        from_seq: Option<u64>,
    ) -> BoxFuture<'a, Result<(Feed, FeedStart), TaskError>> {
        Box::pin(HostCore::follow_task(self, task_id, from_seq))
    }

    fn task_logs<'a>(
        &'a self,
        p: TaskLogsParams,
    ) -> BoxFuture<'a, Result<TaskLogsResult, TaskError>> {
        Box::pin(HostCore::task_logs(self, p))
    }

    fn reply_permission<'a>(
        &'a self,
        p: PermissionReplyParams,
        session: &'a Session,
    ) -> BoxFuture<'a, Result<PermissionReplyResult, PermissionError>> {
        Box::pin(HostCore::reply_permission(self, p, session))
    }

    fn permission_rules<'a>(&'a self) -> BoxFuture<'a, Result<Vec<PermissionRule>, StoreError>> {
        Box::pin(HostCore::permission_rules(self))
    }

    fn forget_permission_rule<'a>(
        &'a self,
        rule_id: &'a str,
    ) -> BoxFuture<'a, Result<(), PermissionError>> {
        Box::pin(HostCore::forget_permission_rule(self, rule_id))
    }

    fn permission_audit<'a>(
        &'a self,
        params: PermissionAuditParams,
    ) -> BoxFuture<'a, Result<Vec<AuditEntry>, StoreError>> {
        Box::pin(HostCore::permission_audit(self, params))
    }

    fn confirm_pairing<'a>(
        &'a self,
        session: &'a Session,
        params: PairingConfirmParams,
    ) -> BoxFuture<'a, Result<PairingResult, PairingError>> {
        Box::pin(HostCore::confirm_pairing(self, session, params))
    }

    fn approve_pairing<'a>(
        &'a self,
        request_id: &'a str,
        scopes: Option<Vec<Scope>>,
    ) -> BoxFuture<'a, Result<DeviceInfo, PairingError>> {
        Box::pin(HostCore::approve_pairing(self, request_id, scopes))
    }

    fn deny_pairing<'a>(&'a self, request_id: &'a str) -> BoxFuture<'a, Result<(), PairingError>> {
        Box::pin(HostCore::deny_pairing(self, request_id))
    }

    fn paired_devices<'a>(&'a self) -> BoxFuture<'a, Result<Vec<DeviceInfo>, StoreError>> {
        Box::pin(HostCore::paired_devices(self))
    }

    fn opencode_api<'a>(
        &'a self,
        wait: Duration,
    ) -> BoxFuture<'a, Result<(ApiClient, Arc<Operations>), Unavailable>> {
        Box::pin(HostCore::opencode_api(self, wait))
    }

    fn console_enrol<'a>(
        &'a self,
        session: &'a Session,
        params: ConsoleEnrolParams,
    ) -> BoxFuture<'a, Result<PairingResult, ConsoleError>> {
        Box::pin(HostCore::console_enrol(self, session, params))
    }

    fn task_outcomes_by_hour<'a>(
        &'a self,
        since_ms: i64,
    ) -> BoxFuture<'a, Result<HourCounts<TaskStatus>, TaskError>> {
        Box::pin(HostCore::task_outcomes_by_hour(self, since_ms))
    }

    fn metric_hours<'a>(
        &'a self,
        since_ms: i64,
    ) -> BoxFuture<'a, Result<HourCounts<String>, StoreError>> {
        Box::pin(HostCore::metric_hours(self, since_ms))
    }

    fn authenticate_session<'a>(
        &'a self,
        session: &'a Session,
        auth: &'a DeviceAuth,
    ) -> BoxFuture<'a, Result<Principal, RpcError>> {
        Box::pin(HostCore::authenticate_session(self, session, auth))
    }

    fn revoke_device<'a>(
        &'a self,
        device_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<(Device, u32)>, StoreError>> {
        Box::pin(HostCore::revoke_device(self, device_id))
    }

    fn metrics_report<'a>(&'a self) -> BoxFuture<'a, Result<MetricsReport, StoreError>> {
        Box::pin(HostCore::metrics_report(self))
    }

    fn health<'a>(&'a self, details: bool) -> BoxFuture<'a, HealthReport> {
        Box::pin(HostCore::health(self, details))
    }

    fn listeners(&self) -> Vec<Listener> {
        HostCore::listeners(self)
    }

    fn runtimes(&self) -> Vec<RuntimeHealth> {
        HostCore::runtimes(self)
    }

    fn wait_for_opencode<'a>(&'a self, wait: Duration) -> BoxFuture<'a, ()> {
        Box::pin(HostCore::wait_for_opencode(self, wait))
    }
}
