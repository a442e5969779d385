//! The host's method handlers and the table that lists them all. Handlers
//! see the host as `HostCalls` (which the host implements) and the calling
//! connection as a `session::Session`.

mod calls;
mod console;
mod devices;
mod errors;
mod health;
mod lifecycle;
mod opencode;
mod pairing;
mod permissions;
mod tasks;

use parking_lot::Mutex;
use std::sync::Arc;

use super::table::{Access, MethodTable};
use crate::auth::Scope;
use crate::session::Session;

pub use crate::session::AfterReply;
pub use calls::{HostCalls, HourCounts};

/// What a handler gets: the host (what it may ask of it is `HostCalls`),
/// and the connection it is called on.
#[derive(Clone)]
pub struct CallContext {
    host: Arc<dyn HostCalls>,
    pub session: Arc<Session>,
    after_reply: Arc<Mutex<AfterReply>>,
}

impl CallContext {
    pub(crate) fn new(host: Arc<dyn HostCalls>, session: Arc<Session>) -> Self {
        Self {
            host,
            session,
            after_reply: Arc::default(),
        }
    }

    /// The host the call is made to.
    pub(crate) fn host(&self) -> &dyn HostCalls {
        self.host.as_ref()
    }

    /// Runs `f` once the reply to this call is queued, e.g. to start a
    /// subscription whose notifications must come after the reply.
    pub(crate) fn after_reply(&self, f: impl FnOnce() + Send + 'static) {
        self.lock().push(Box::new(f));
    }

    /// The work registered with `after_reply`.
    pub(crate) fn take_after_reply(&self) -> AfterReply {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, AfterReply> {
        self.after_reply.lock()
    }
}

/// A scope a call needs beyond its method's own (the table checks that one):
/// `what` says what needs it, `why` (if any) why.
pub(crate) fn require_scope(
    principal: &crate::auth::Principal,
    scope: Scope,
    what: &str,
    why: Option<&str>,
) -> Result<(), crate::rpc::RpcError> {
    if principal.has(scope) {
        return Ok(());
    }
    let because = why.map(|w| format!(": it {w}")).unwrap_or_default();
    Err(crate::rpc::RpcError::new(
        crate::rpc::ErrorCode::FORBIDDEN,
        format!("{what} needs the `{scope}` scope, which this device was not granted{because}"),
    )
    .with_data("scope", scope.as_str().into())
    .with_action(format!(
        "ask the host's owner to pair this device again with the `{scope}` scope, or do it on the host itself"
    )))
}

/// Every method the host serves, with who may call it, what it does and the
/// codes it may answer with: `schema/openrpc.json` is generated from this table.
pub fn table() -> MethodTable<CallContext> {
    use crate::rpc::ErrorCode as E;
    let mut t = MethodTable::new();
    let open = Access::Open;
    let scope = Access::Scope;

    t.register_in_order("initialize", open, lifecycle::initialize)
        .summary("Handshake: who the client is, the device credential; answers with the host, its capabilities and the scopes held")
        .errors(&[E::UNAUTHORIZED, E::CONFLICT]);
    t.register_in_order("auth.challenge", open, lifecycle::auth_challenge)
        .summary("A fresh nonce for a browser to sign in `initialize`'s `auth` (single use, on this connection only, for 60 s)");
    t.register_in_order("shutdown", open, lifecycle::shutdown)
        .summary("LSP-style end of session: only `exit` may follow");
    t.register_in_order("exit", open, lifecycle::exit)
        .summary("Closes the connection (stdio: the process exits)")
        .notification();
    t.register_in_order("$/cancelRequest", open, lifecycle::cancel_request)
        .summary("Cancels an in-flight request by id; it answers -32800")
        .notification();
    t.register("$/ping", open, lifecycle::ping)
        .summary("Liveness: answers `{}`");
    t.register("capabilities.get", open, lifecycle::capabilities_get)
        .summary("`initialize`'s capabilities as they are now (OpenCode's operations once it is ready); `opencodeWaitS` waits for OpenCode first")
        .errors(&[E::UNAUTHORIZED]);

    t.register("task.run", scope(Scope::TasksRun), tasks::run)
        .summary("Starts a task and answers at once; the caller then gets its task.updated and log.chunk notifications")
        .errors(&[E::CONFLICT, E::RUNTIME_UNAVAILABLE]);
    t.register("task.cancel", scope(Scope::TasksRun), tasks::cancel)
        .summary("Stops a task's whole process group (SIGTERM, then SIGKILL)")
        .errors(&[E::NOT_FOUND, E::CONFLICT]);
    t.register("task.get", scope(Scope::TasksRead), tasks::get)
        .summary("One task's record")
        .errors(&[E::NOT_FOUND]);
    t.register("task.list", scope(Scope::TasksRead), tasks::list)
        .summary("Tasks, newest first, by page");
    // In order, like `task.unsubscribe`: an unsubscribe and a subscribe sent
    // back to back take effect in that order.
    t.register_in_order("task.subscribe", scope(Scope::TasksRead), tasks::subscribe)
        .summary("Replays a task's stored log from `fromSeq`, then follows it live with no gap and no duplicate")
        .errors(&[E::NOT_FOUND]);
    t.register_in_order(
        "task.unsubscribe",
        scope(Scope::TasksRead),
        tasks::unsubscribe,
    )
    .summary("Stops following a task")
    .errors(&[E::NOT_FOUND]);
    t.register("task.logs", scope(Scope::TasksRead), tasks::logs)
        .summary("Pages through a task's stored log chunks")
        .errors(&[E::NOT_FOUND]);

    t.register(
        "permission.reply",
        scope(Scope::PermissionsReply),
        permissions::reply,
    )
    .summary("Answers a permission request; the first answer wins")
    .errors(&[E::CONFLICT]);
    t.register(
        "permission.pending",
        scope(Scope::PermissionsReply),
        permissions::pending,
    )
    .summary("The permission requests waiting for an answer (those asked before this connection followed their task too)");
    t.register("permission.rules", scope(Scope::Admin), permissions::rules)
        .summary("The remembered `always` rules");
    t.register(
        "permission.forget",
        scope(Scope::Admin),
        permissions::forget,
    )
    .summary("Deletes a remembered rule")
    .errors(&[E::NOT_FOUND]);
    t.register("permission.audit", scope(Scope::Admin), permissions::audit)
        .summary("The audit trail of requests, decisions, expiries and denials, newest first");

    t.register("pairing.begin", open, pairing::begin)
        .summary("Device: sends its SPAKE2 message; answers with the host's and the host's key confirmation")
        .errors(&[E::CONFLICT, E::RATE_LIMITED]);
    t.register("pairing.confirm", open, pairing::confirm)
        .summary("Device: sends its key confirmation, then waits for the owner's approval; answers with the credential")
        .errors(&[E::UNAUTHORIZED, E::FORBIDDEN, E::CONFLICT, E::RATE_LIMITED]);
    t.register("pairing.open", Access::Owner, pairing::open)
        .summary("Owner: opens a pairing window with a fresh code; the connection then gets pairing.* notifications")
        .errors(&[E::CONFLICT]);
    t.register("pairing.close", Access::Owner, pairing::close)
        .summary("Owner: closes the pairing window");
    t.register("pairing.status", Access::Owner, pairing::status)
        .summary("Owner: the pairing window and the devices waiting for approval");
    t.register("pairing.approve", Access::Owner, pairing::approve)
        .summary("Owner: approves a waiting device, maybe with fewer scopes")
        .errors(&[E::NOT_FOUND, E::CONFLICT]);
    t.register("pairing.deny", Access::Owner, pairing::deny)
        .summary("Owner: refuses a waiting device")
        .errors(&[E::NOT_FOUND]);
    t.register("devices.list", Access::Owner, devices::list)
        .summary("Paired devices, with their scopes and live connections");
    t.register("devices.revoke", Access::Owner, devices::revoke)
        .summary("Revokes a device: its connections close at once and its token never works again")
        .errors(&[E::NOT_FOUND]);
    t.register("devices.revokeSelf", open, devices::revoke_self)
        .summary("A paired device revokes its own pairing (forgetting the host): the answer reaches it, then its connections close and its credential never works again")
        .errors(&[E::UNAUTHORIZED, E::CONFLICT]);

    t.register_prefix::<serde_json::Map<String, serde_json::Value>, serde_json::Value, _>(
        "opencode.",
        scope(Scope::Opencode),
        opencode::call,
    )
    .summary("OpenCode's server API: `opencode.<operationId>`, params mapped onto path, query and body by name; the operations are in initialize's (or capabilities.get's) capabilities.opencode.operations; those that run commands, change OpenCode's configuration or answer its permission asks also need `admin`")
    .errors(&[
        E::METHOD_NOT_FOUND,
        E::NOT_FOUND,
        E::CONFLICT,
        E::RATE_LIMITED,
        E::RUNTIME_UNAVAILABLE,
    ]);

    t.register("health.get", open, health::get).summary(
        "The health panel; details (data dir, task counts, connections) need `tasks.read`",
    );
    t.register("metrics.get", scope(Scope::TasksRead), health::metrics)
        .summary("Local counters: uptime, connections, tasks by outcome");
    t.register("metrics.series", scope(Scope::TasksRead), console::series)
        .summary("The local counters hour by hour: tasks finished by outcome, connections, connection and authentication failures");

    t.register("console.link", Access::Owner, console::link)
        .summary("Owner: a one-time, short-lived link that enrols a browser on this machine as the owner's console")
        .errors(&[E::CONFLICT]);
    t.register("console.enrol", open, console::enrol)
        .summary("A browser on the host's machine redeems a console link: its key becomes the owner's console device (`admin` and the default scopes)")
        .errors(&[E::UNAUTHORIZED, E::FORBIDDEN, E::CONFLICT]);
    t.register("console.overview", Access::Owner, console::overview)
        .summary("Owner: what the console shows to guide set-up: the LAN address, settings and their meaning, OpenCode, the command policy");
    t
}
