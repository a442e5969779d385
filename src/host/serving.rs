//! The host as its connections see it: `session::Serving` for `HostCore`.

use std::sync::Arc;

use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::auth::Principal;
use crate::config::Config;
use crate::rpc::methods::{CallContext, HostCalls};
use crate::rpc::table::BoxFuture;
use crate::rpc::{Access, RpcError, Scheduling};
use crate::session::budget::ReplySizes;
use crate::session::{Handled, Serving, Session, SessionEnd};

use super::HostCore;

impl Serving for HostCore {
    fn config(&self) -> &Config {
        HostCore::config(self)
    }

    fn next_session_id(&self) -> u64 {
        HostCore::next_session_id(self)
    }

    fn session_opened(&self, session: &Arc<Session>) {
        HostCore::session_opened(self, session)
    }

    fn session_closed(&self, session: &Arc<Session>, end: &SessionEnd) {
        HostCore::session_closed(self, session, end)
    }

    fn shutdown_token(&self) -> CancellationToken {
        HostCore::shutdown_token(self)
    }

    fn reply_sizes(&self) -> &ReplySizes {
        HostCore::reply_sizes(self)
    }

    fn owner_may_act(&self, principal: &Principal) -> bool {
        HostCore::owner_may_act(self, principal)
    }

    fn method(&self, method: &str) -> Option<(Access, Scheduling)> {
        self.methods()
            .find(method)
            .map(|m| (m.access(), m.scheduling()))
    }

    fn call(
        self: Arc<Self>,
        session: Arc<Session>,
        method: &str,
        params: Option<Box<RawValue>>,
    ) -> BoxFuture<Handled> {
        let Some(entry) = self.methods().find(method) else {
            let error = RpcError::method_not_found(method);
            return Box::pin(std::future::ready((Err(error), Vec::new())));
        };
        let ctx = CallContext::new(Arc::clone(&self) as Arc<dyn HostCalls>, session);
        let handled = entry.call(ctx.clone(), method, params);
        Box::pin(async move {
            let result = handled.await;
            (result, ctx.take_after_reply())
        })
    }
}
