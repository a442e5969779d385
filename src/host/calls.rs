//! What connections and method handlers may ask of the host: the host's own
//! accessors, and `rpc::methods::HostCalls` for `HostCore`, so that no
//! handler reaches into the host's parts. Calls whose answer is a report
//! (health, metrics) live in `report`, who a connection is in `auth`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::broadcast;
use tokio_util::sync::WaitForCancellationFuture;

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
use crate::session::budget::ReplySizes;
use crate::store::StoreError;
use crate::tasks::{Feed, FeedStart, TaskError};

use super::HostCore;

/// The host itself: who it is, how it is configured, whether it is stopping.
/// Public for embedders and tests; handlers reach them through `HostCalls`.
impl HostCore {
    /// The configuration the host runs with (read only).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The data dir the host runs in.
    pub fn data_dir(&self) -> &DataDir {
        &self.data_dir
    }

    /// The host's id, as devices know it.
    pub fn host_id(&self) -> &str {
        &self.identity.host_id
    }

    /// The host's name, as devices are shown it.
    pub fn host_name(&self) -> &str {
        &self.host_name
    }

    /// The fingerprint of the host's certificate.
    pub fn fingerprint(&self) -> &str {
        &self.identity.fingerprint
    }

    /// A token cancelled when the host begins to shut down.
    pub fn shutdown_token(&self) -> tokio_util::sync::CancellationToken {
        self.shutdown.clone()
    }

    /// Resolves when the host begins to shut down.
    pub fn shutting_down(&self) -> WaitForCancellationFuture<'_> {
        self.shutdown.cancelled()
    }

    /// Every method the host serves.
    pub(crate) fn methods(&self) -> &MethodTable<CallContext> {
        &self.methods
    }

    /// The largest reply each method has produced, for the reply budgets.
    pub(crate) fn reply_sizes(&self) -> &ReplySizes {
        &self.reply_sizes
    }

    /// Opens a pairing window with a fresh code.
    pub fn open_pairing_window(
        &self,
        params: PairingOpenParams,
    ) -> Result<PairingWindow, PairingError> {
        self.pairing.open(params)
    }

    /// The pairing window and the devices waiting for approval.
    pub fn pairing_status(&self) -> PairingStatus {
        self.pairing.status()
    }
}

impl HostCalls for HostCore {
    // Who the host is; the public accessors above.
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

    // Tasks.
    fn run_task<'a>(
        &'a self,
        params: TaskRunParams,
        by: &'a Principal,
    ) -> BoxFuture<'a, Result<(TaskRunResult, Feed), TaskError>> {
        Box::pin(self.tasks.run(params, by))
    }

    fn cancel_task<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<TaskRecord, TaskError>> {
        Box::pin(self.tasks.cancel(task_id))
    }

    fn task<'a>(&'a self, task_id: &'a str) -> BoxFuture<'a, Result<TaskRecord, TaskError>> {
        Box::pin(self.tasks.get(task_id))
    }

    fn list_tasks<'a>(
        &'a self,
        p: TaskListParams,
    ) -> BoxFuture<'a, Result<Vec<TaskRecord>, TaskError>> {
        Box::pin(self.tasks.list(p))
    }

    fn follow_task<'a>(
        &'a self,
        task_id: &'a str,
        from_seq: Option<u64>,
    ) -> BoxFuture<'a, Result<(Feed, FeedStart), TaskError>> {
        Box::pin(self.tasks.subscribe(task_id, from_seq))
    }

    fn task_logs<'a>(
        &'a self,
        p: TaskLogsParams,
    ) -> BoxFuture<'a, Result<TaskLogsResult, TaskError>> {
        Box::pin(self.tasks.logs(p))
    }

    fn workspace_roots(&self) -> &[PathBuf] {
        self.tasks.roots()
    }

    fn workspace_dir(&self, dir: Option<&str>) -> Result<PathBuf, TaskError> {
        self.tasks.workspace_dir(dir)
    }

    fn task_outcomes_by_hour<'a>(
        &'a self,
        since_ms: i64,
    ) -> BoxFuture<'a, Result<HourCounts<TaskStatus>, TaskError>> {
        Box::pin(self.tasks.outcomes_by_hour(since_ms))
    }

    // Permissions.
    fn reply_permission<'a>(
        &'a self,
        p: PermissionReplyParams,
        session: &'a Session,
    ) -> BoxFuture<'a, Result<PermissionReplyResult, PermissionError>> {
        Box::pin(async move {
            let principal = session.principal();
            self.permissions
                .reply(&p.request_id, p.decision, &principal, session.id)
                .await
        })
    }

    fn pending_permission_requests(&self) -> Vec<PermissionRequest> {
        self.permissions.pending()
    }

    fn permission_rules<'a>(&'a self) -> BoxFuture<'a, Result<Vec<PermissionRule>, StoreError>> {
        Box::pin(self.permissions.rules())
    }

    fn forget_permission_rule<'a>(
        &'a self,
        rule_id: &'a str,
    ) -> BoxFuture<'a, Result<(), PermissionError>> {
        Box::pin(self.permissions.forget(rule_id))
    }

    fn permission_audit<'a>(
        &'a self,
        params: PermissionAuditParams,
    ) -> BoxFuture<'a, Result<Vec<AuditEntry>, StoreError>> {
        Box::pin(self.permissions.audit_entries(params))
    }

    // Pairing and devices.
    fn begin_pairing(
        &self,
        session: &Session,
        params: PairingBeginParams,
    ) -> Result<PairingBeginResult, PairingError> {
        self.pairing
            .begin(session.id, &session.peer, session.channel_binding(), params)
    }

    fn confirm_pairing<'a>(
        &'a self,
        session: &'a Session,
        params: PairingConfirmParams,
    ) -> BoxFuture<'a, Result<PairingResult, PairingError>> {
        Box::pin(
            self.pairing
                .confirm(session.id, params, session.peer_gone()),
        )
    }

    fn open_pairing_window(
        &self,
        params: PairingOpenParams,
    ) -> Result<PairingWindow, PairingError> {
        HostCore::open_pairing_window(self, params)
    }

    fn pairing_events(&self) -> broadcast::Receiver<Bytes> {
        self.pairing.events()
    }

    fn close_pairing_window(&self, reason: &str) -> bool {
        self.pairing.close(reason)
    }

    fn pairing_status(&self) -> PairingStatus {
        HostCore::pairing_status(self)
    }

    fn pairing_endpoint(&self) -> Option<Endpoint> {
        self.pairing.endpoint()
    }

    fn approve_pairing<'a>(
        &'a self,
        request_id: &'a str,
        scopes: Option<Vec<Scope>>,
    ) -> BoxFuture<'a, Result<DeviceInfo, PairingError>> {
        Box::pin(self.pairing.approve(request_id, scopes))
    }

    fn deny_pairing<'a>(&'a self, request_id: &'a str) -> BoxFuture<'a, Result<(), PairingError>> {
        Box::pin(self.pairing.deny(request_id))
    }

    fn paired_devices<'a>(&'a self) -> BoxFuture<'a, Result<Vec<DeviceInfo>, StoreError>> {
        Box::pin(async move {
            let devices = self.devices.list().await?;
            Ok(devices
                .iter()
                .map(|d| d.info(self.device_connections(&d.id)))
                .collect())
        })
    }

    // Who a connection is (auth.rs).
    fn owner_may_act(&self, principal: &Principal) -> bool {
        HostCore::owner_may_act(self, principal)
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

    // OpenCode.
    fn opencode_api<'a>(
        &'a self,
        wait: Duration,
    ) -> BoxFuture<'a, Result<(ApiClient, Arc<Operations>), Unavailable>> {
        Box::pin(self.opencode.ready(wait))
    }

    fn wait_for_opencode<'a>(&'a self, wait: Duration) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if self.opencode.configured().is_ok() {
                let _ = self.opencode.ready(wait).await;
            }
        })
    }

    fn opencode_error(&self, e: ApiError) -> RpcError {
        self.opencode.rpc_error(e)
    }

    fn opencode_capability(&self, principal: &Principal) -> OpencodeCapability {
        HostCore::opencode_capability(self, principal)
    }

    // The owner's console.
    fn console_link(&self, ttl_s: Option<u64>) -> Result<ConsoleLink, ConsoleError> {
        let tls: Vec<std::net::SocketAddr> = self
            .listeners()
            .into_iter()
            .filter(|l| l.transport == "tls")
            .filter_map(|l| l.address.parse().ok())
            .collect();
        self.pairing.console_link(ttl_s, &tls)
    }

    fn console_enrol<'a>(
        &'a self,
        session: &'a Session,
        params: ConsoleEnrolParams,
    ) -> BoxFuture<'a, Result<PairingResult, ConsoleError>> {
        Box::pin(async move {
            let result = self
                .pairing
                .console_enrol(session.origin(), &session.peer, params)
                .await;
            if let Err(e @ (ConsoleError::Used | ConsoleError::Expired | ConsoleError::Unknown)) =
                &result
            {
                self.metrics.auth_failure(&session.peer, "(a console link)");
                tracing::warn!(peer = %session.peer, "a console link was refused: {e}");
            }
            result
        })
    }

    // Reports (report.rs) and metrics.
    fn listeners(&self) -> Vec<Listener> {
        HostCore::listeners(self)
    }

    fn runtimes(&self) -> Vec<RuntimeHealth> {
        HostCore::runtimes(self)
    }

    fn metrics_report<'a>(&'a self) -> BoxFuture<'a, Result<MetricsReport, StoreError>> {
        Box::pin(HostCore::metrics_report(self))
    }

    fn health<'a>(&'a self, details: bool) -> BoxFuture<'a, HealthReport> {
        Box::pin(HostCore::health(self, details))
    }

    fn metric_hours<'a>(
        &'a self,
        since_ms: i64,
    ) -> BoxFuture<'a, Result<HourCounts<String>, StoreError>> {
        Box::pin(self.metrics.hourly(since_ms))
    }

    fn telemetry(&self) -> bool {
        self.metrics.telemetry()
    }
}
