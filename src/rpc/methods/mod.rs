//! The host's method handlers and the table that lists them all.

mod devices;
mod errors;
mod health;
mod lifecycle;
mod opencode;
mod pairing;
mod permissions;
mod tasks;

use std::sync::{Arc, Mutex};

use super::table::{Access, MethodTable};
use crate::auth::Scope;
use crate::host::HostCore;
use crate::session::Session;

/// Work to run once a call's reply is queued.
pub type AfterReply = Vec<Box<dyn FnOnce() + Send>>;

/// What a handler gets: the host, and the connection it is called on.
#[derive(Clone)]
pub struct CallContext {
    pub host: Arc<HostCore>,
    pub session: Arc<Session>,
    after_reply: Arc<Mutex<AfterReply>>,
}

impl CallContext {
    pub fn new(host: Arc<HostCore>, session: Arc<Session>) -> Self {
        Self {
            host,
            session,
            after_reply: Arc::default(),
        }
    }

    /// Runs `f` once the reply to this call is queued, e.g. to start a
    /// subscription whose notifications must come after the reply.
    pub fn after_reply(&self, f: impl FnOnce() + Send + 'static) {
        self.lock().push(Box::new(f));
    }

    /// The work registered with `after_reply`.
    pub fn take_after_reply(&self) -> AfterReply {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AfterReply> {
        self.after_reply.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Every method the host serves, with who may call it.
pub fn table() -> MethodTable<CallContext> {
    let mut t = MethodTable::new();
    let open = Access::Open;
    let scope = Access::Scope;

    t.register_in_order("initialize", open, lifecycle::initialize);
    t.register_in_order("shutdown", open, lifecycle::shutdown);
    t.register_in_order("exit", open, lifecycle::exit);
    t.register_in_order("$/cancelRequest", open, lifecycle::cancel_request);
    t.register("$/ping", open, lifecycle::ping);

    t.register("task.run", scope(Scope::TasksRun), tasks::run);
    t.register("task.cancel", scope(Scope::TasksRun), tasks::cancel);
    t.register("task.get", scope(Scope::TasksRead), tasks::get);
    t.register("task.list", scope(Scope::TasksRead), tasks::list);
    t.register("task.subscribe", scope(Scope::TasksRead), tasks::subscribe);
    t.register(
        "task.unsubscribe",
        scope(Scope::TasksRead),
        tasks::unsubscribe,
    );
    t.register("task.logs", scope(Scope::TasksRead), tasks::logs);

    t.register(
        "permission.reply",
        scope(Scope::PermissionsReply),
        permissions::reply,
    );
    t.register("permission.rules", scope(Scope::Admin), permissions::rules);
    t.register(
        "permission.forget",
        scope(Scope::Admin),
        permissions::forget,
    );
    t.register("permission.audit", scope(Scope::Admin), permissions::audit);

    t.register("pairing.begin", open, pairing::begin);
    t.register("pairing.confirm", open, pairing::confirm);
    t.register("pairing.open", Access::Owner, pairing::open);
    t.register("pairing.close", Access::Owner, pairing::close);
    t.register("pairing.status", Access::Owner, pairing::status);
    t.register("pairing.approve", Access::Owner, pairing::approve);
    t.register("pairing.deny", Access::Owner, pairing::deny);
    t.register("devices.list", Access::Owner, devices::list);
    t.register("devices.revoke", Access::Owner, devices::revoke);

    t.register_prefix("opencode.", scope(Scope::Opencode), opencode::call);

    t.register("health.get", open, health::get);
    t.register("metrics.get", scope(Scope::TasksRead), health::metrics);
    t
}
