//! What a connection needs from the host that serves it (`Serving`): the
//! host implements it, so that this layer names nothing above it.

use std::sync::Arc;

use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use super::budget::ReplySizes;
use super::{Session, SessionEnd};
use crate::auth::Principal;
use crate::config::Config;
use crate::rpc::table::BoxFuture;
use crate::rpc::{Access, RpcError, Scheduling};

/// Work to run once a call's reply is queued.
pub type AfterReply = Vec<Box<dyn FnOnce() + Send>>;

/// A call's outcome: its result, and the work to run once its reply is queued.
pub type Handled = (Result<Box<RawValue>, RpcError>, AfterReply);

/// The host, as the connections it serves see it.
pub trait Serving: Send + Sync {
    /// The configuration the host runs with.
    fn config(&self) -> &Config;
    /// A fresh id for a new connection.
    fn next_session_id(&self) -> u64;
    /// A connection began (it counts in health and metrics from now on).
    fn session_opened(&self, session: &Arc<Session>);
    /// A connection ended.
    fn session_closed(&self, session: &Arc<Session>, end: &SessionEnd);
    /// A token cancelled when the host begins to shut down.
    fn shutdown_token(&self) -> CancellationToken;
    /// The largest reply each method has produced, for the reply budgets.
    fn reply_sizes(&self) -> &ReplySizes;
    /// Whether `principal` may act as the host's owner.
    fn owner_may_act(&self, principal: &Principal) -> bool;
    /// Who may call `method` and how it is scheduled; `None` when the host
    /// has no such method.
    fn method(&self, method: &str) -> Option<(Access, Scheduling)>;
    /// Runs `method`'s handler for `session` (access already checked).
    fn call(
        self: Arc<Self>,
        session: Arc<Session>,
        method: &str,
        params: Option<Box<RawValue>>,
    ) -> BoxFuture<Handled>;
}
