//! What connections and method handlers may ask of the host: one method per
//! thing they may do, so that none of them reaches into the host's parts.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::WaitForCancellationFuture;

use crate::auth::{Principal, Scope};
use crate::config::Config;
use crate::datadir::DataDir;
use crate::pairing::PairingError;
use crate::permissions::PermissionError;
use crate::protocol::{
    AuditEntry, DeviceInfo, PairingBeginParams, PairingBeginResult, PairingConfirmParams,
    PairingOpenParams, PairingResult, PairingStatus, PairingWindow, PermissionAuditParams,
    PermissionReplyParams, PermissionReplyResult, PermissionRule, TaskListParams, TaskLogsParams,
    TaskLogsResult, TaskRecord, TaskRunParams, TaskRunResult,
};
use crate::rpc::MethodTable;
use crate::rpc::methods::CallContext;
use crate::runtime::opencode::{ApiClient, ApiError, Operations, Unavailable};
use crate::session::Session;
use crate::session::budget::ReplySizes;
use crate::store::StoreError;
use crate::tasks::{Feed, FeedStart, TaskError};

use super::HostCore;

/// The host itself: who it is, how it is configured, whether it is stopping.
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
}

/// Tasks.
impl HostCore {
    /// Starts a task for `by`; its feed follows it from its first chunk.
    pub(crate) async fn run_task(
        &self,
        params: TaskRunParams,
        by: &Principal,
    ) -> Result<(TaskRunResult, Feed), TaskError> {
        self.tasks.run(params, by).await
    }

    /// Stops a task.
    pub(crate) async fn cancel_task(&self, task_id: &str) -> Result<TaskRecord, TaskError> {
        self.tasks.cancel(task_id).await
    }

    /// A task's record.
    pub(crate) async fn task(&self, task_id: &str) -> Result<TaskRecord, TaskError> {
        self.tasks.get(task_id).await
    }

    /// Tasks, newest first, by page.
    pub(crate) async fn list_tasks(&self, p: TaskListParams) -> Result<Vec<TaskRecord>, TaskError> {
        self.tasks.list(p).await
    }

    /// Follows a task from `from_seq`: its stored log, then live.
    pub(crate) async fn follow_task(
        &self,
        task_id: &str,
        from_seq: Option<u64>,
    ) -> Result<(Feed, FeedStart), TaskError> {
        self.tasks.subscribe(task_id, from_seq).await
    }

    /// A page of a task's stored log.
    pub(crate) async fn task_logs(&self, p: TaskLogsParams) -> Result<TaskLogsResult, TaskError> {
        self.tasks.logs(p).await
    }

    /// The directories tasks may run in, the default first.
    pub(crate) fn workspace_roots(&self) -> &[PathBuf] {
        self.tasks.roots()
    }

    /// `dir` resolved inside the workspace roots (the first root if `None`).
    pub(crate) fn workspace_dir(&self, dir: Option<&str>) -> Result<PathBuf, TaskError> {
        self.tasks.workspace_dir(dir)
    }
}

/// Permissions.
impl HostCore {
    /// Answers a permission request for whoever calls on `session`.
    pub(crate) async fn reply_permission(
        &self,
        p: PermissionReplyParams,
        session: &Session,
    ) -> Result<PermissionReplyResult, PermissionError> {
        let principal = session.principal();
        self.permissions
            .reply(&p.request_id, p.decision, &principal, session.id)
            .await
    }

    /// The permission requests waiting for an answer, soonest to expire first.
    pub(crate) fn pending_permission_requests(&self) -> Vec<crate::protocol::PermissionRequest> {
        self.permissions.pending()
    }

    /// The remembered `always` rules.
    pub(crate) async fn permission_rules(&self) -> Result<Vec<PermissionRule>, StoreError> {
        self.permissions.rules().await
    }

    /// Forgets a remembered rule.
    pub(crate) async fn forget_permission_rule(
        &self,
        rule_id: &str,
    ) -> Result<(), PermissionError> {
        self.permissions.forget(rule_id).await
    }

    /// The permission audit trail, newest first.
    pub(crate) async fn permission_audit(
        &self,
        params: PermissionAuditParams,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.permissions.audit_entries(params).await
    }
}

/// Pairing and devices.
impl HostCore {
    /// A device's first pairing message, on `session`.
    pub(crate) fn begin_pairing(
        &self,
        session: &Session,
        params: PairingBeginParams,
    ) -> Result<PairingBeginResult, PairingError> {
        self.pairing
            .begin(session.id, &session.peer, session.channel_binding(), params)
    }

    /// A device's key confirmation, on `session`; waits for the owner's
    /// approval unless the device goes away first.
    pub(crate) async fn confirm_pairing(
        &self,
        session: &Session,
        params: PairingConfirmParams,
    ) -> Result<PairingResult, PairingError> {
        self.pairing
            .confirm(session.id, params, session.peer_gone())
            .await
    }

    /// Opens a pairing window with a fresh code.
    pub fn open_pairing_window(
        &self,
        params: PairingOpenParams,
    ) -> Result<PairingWindow, PairingError> {
        self.pairing.open(params)
    }

    /// The pairing window's notifications (requests, wrong codes, closing).
    pub(crate) fn pairing_events(&self) -> tokio::sync::broadcast::Receiver<Bytes> {
        self.pairing.events()
    }

    /// Closes the pairing window.
    pub(crate) fn close_pairing_window(&self, reason: &str) -> bool {
        self.pairing.close(reason)
    }

    /// The pairing window and the devices waiting for approval.
    pub fn pairing_status(&self) -> PairingStatus {
        self.pairing.status()
    }

    /// Approves a waiting device, maybe with fewer scopes.
    pub(crate) async fn approve_pairing(
        &self,
        request_id: &str,
        scopes: Option<Vec<Scope>>,
    ) -> Result<DeviceInfo, PairingError> {
        self.pairing.approve(request_id, scopes).await
    }

    /// Refuses a waiting device.
    pub(crate) async fn deny_pairing(&self, request_id: &str) -> Result<(), PairingError> {
        self.pairing.deny(request_id).await
    }

    /// Paired devices, each with the connections it has open now.
    pub(crate) async fn paired_devices(&self) -> Result<Vec<DeviceInfo>, StoreError> {
        let devices = self.devices.list().await?;
        Ok(devices
            .iter()
            .map(|d| d.info(self.device_connections(&d.id)))
            .collect())
    }
}

/// OpenCode.
impl HostCore {
    /// OpenCode's API and its operations, once it is ready (waiting up to `wait`).
    pub(crate) async fn opencode_api(
        &self,
        wait: Duration,
    ) -> Result<(ApiClient, Arc<Operations>), Unavailable> {
        self.opencode.ready(wait).await
    }

    /// Waits up to `wait` for OpenCode to be ready, if it is configured at
    /// all; not ready in time is no error.
    pub(crate) async fn wait_for_opencode(&self, wait: Duration) {
        if self.opencode.configured().is_ok() {
            let _ = self.opencode.ready(wait).await;
        }
    }

    /// A failed call to OpenCode as a JSON-RPC error, with what to do about it.
    pub(crate) fn opencode_error(&self, e: ApiError) -> crate::rpc::RpcError {
        self.opencode.rpc_error(e)
    }
}

/// The owner's console: its one-time links, and the figures its plots draw.
impl HostCore {
    /// A one-time link enrolling a browser on this machine as the owner's
    /// console, for the first TLS listener that takes loopback.
    pub(crate) fn console_link(
        &self,
        ttl_s: Option<u64>,
    ) -> Result<crate::protocol::ConsoleLink, crate::pairing::console::ConsoleError> {
        let tls: Vec<std::net::SocketAddr> = self
            .listeners()
            .into_iter()
            .filter(|l| l.transport == "tls")
            .filter_map(|l| l.address.parse().ok())
            .collect();
        self.pairing.console_link(ttl_s, &tls)
    }

    /// Redeems a console link for the browser on `session`; a link that does
    /// not work counts as a failed authentication.
    pub(crate) async fn console_enrol(
        &self,
        session: &Session,
        params: crate::protocol::ConsoleEnrolParams,
    ) -> Result<PairingResult, crate::pairing::console::ConsoleError> {
        use crate::pairing::console::ConsoleError;
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
    }

    /// The address and port a pairing link gives devices, when there is one.
    pub(crate) fn pairing_endpoint(&self) -> Option<crate::pairing::Endpoint> {
        self.pairing.endpoint()
    }

    /// Tasks finished per hour since `since_ms`, by outcome.
    pub(crate) async fn task_outcomes_by_hour(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(i64, crate::protocol::TaskStatus, u64)>, TaskError> {
        self.tasks.outcomes_by_hour(since_ms).await
    }

    /// The host's counters per hour since `since_ms`: (hour, counter, count).
    pub(crate) async fn metric_hours(
        &self,
        since_ms: i64,
    ) -> Result<Vec<(i64, String, u64)>, StoreError> {
        self.metrics.hourly(since_ms).await
    }

    /// Whether the owner lets the host keep its local metrics.
    pub(crate) fn telemetry(&self) -> bool {
        self.metrics.telemetry()
    }
}
