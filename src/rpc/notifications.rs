//! Every host-to-client notification: its method name and params type.
//!
//! Senders encode through these typed constants, so a notification's params
//! cannot drift from the type `schema/` documents for it; `all()` lists them
//! for the schema.

use std::marker::PhantomData;

use bytes::Bytes;
use schemars::JsonSchema;
use serde::Serialize;

use super::message::encode_notification;
use super::table::SchemaFn;
use crate::protocol::{
    LogChunk, PairingClosed, PairingFailed, PairingRequest, PairingWithdrawn, PermissionRequest,
    PermissionResolved, TaskUpdate,
};

/// A notification method whose params are a `P`.
pub(crate) struct Notification<P> {
    pub method: &'static str,
    params: PhantomData<fn(&P)>,
}

impl<P: Serialize> Notification<P> {
    const fn new(method: &'static str) -> Self {
        Self {
            method,
            params: PhantomData,
        }
    }

    /// Encodes a complete notification frame.
    pub(crate) fn encode(&self, params: &P) -> Bytes {
        encode_notification(self.method, params)
    }
}

/// A piece of a task's output (hand-encoded on the hot path in `tasks::chunk`).
pub(crate) const LOG_CHUNK: Notification<LogChunk> = Notification::new("log.chunk");
/// A task changed status.
pub(crate) const TASK_UPDATED: Notification<TaskUpdate> = Notification::new("task.updated");
/// A task waits for a person's decision.
pub(crate) const PERMISSION_REQUEST: Notification<PermissionRequest> =
    Notification::new("permission.request");
/// A permission request was answered, or expired.
pub(crate) const PERMISSION_RESOLVED: Notification<PermissionResolved> =
    Notification::new("permission.resolved");
/// Owner: a device asks to be approved.
pub(crate) const PAIRING_REQUESTED: Notification<PairingRequest> =
    Notification::new("pairing.requested");
/// Owner: a wrong pairing code was tried.
pub(crate) const PAIRING_FAILED: Notification<PairingFailed> = Notification::new("pairing.failed");
/// Owner: a device waiting for approval left; its request is withdrawn.
pub(crate) const PAIRING_WITHDRAWN: Notification<PairingWithdrawn> =
    Notification::new("pairing.withdrawn");
/// Owner: the pairing window closed.
pub(crate) const PAIRING_CLOSED: Notification<PairingClosed> = Notification::new("pairing.closed");

/// What the schema says about one notification.
pub(crate) struct NotificationDoc {
    pub method: &'static str,
    pub summary: &'static str,
    /// Which connections receive it.
    pub audience: &'static str,
    pub params: SchemaFn,
}

fn doc<P: Serialize + JsonSchema>(
    n: &Notification<P>,
    summary: &'static str,
    audience: &'static str,
) -> NotificationDoc {
    NotificationDoc {
        method: n.method,
        summary,
        audience,
        params: |g| g.subschema_for::<P>(),
    }
}

const FOLLOWERS: &str =
    "connections following the task: the one that started it, and those that subscribed";

/// Every notification the host sends, for `schema/openrpc.json`.
pub(crate) fn all() -> Vec<NotificationDoc> {
    vec![
        doc(
            &LOG_CHUNK,
            "A piece of a task's output; seq starts at 1 and has no gaps per task",
            FOLLOWERS,
        ),
        doc(
            &TASK_UPDATED,
            "A task changed status; a subscription ends with the final one",
            FOLLOWERS,
        ),
        doc(
            &PERMISSION_REQUEST,
            "A task waits for a decision: answer with permission.reply",
            "connections following the task that hold `permissions.reply` (again on subscribe and reconnect)",
        ),
        doc(
            &PERMISSION_RESOLVED,
            "A permission request was answered (by another client) or expired",
            "connections that were sent the request",
        ),
        doc(
            &PAIRING_REQUESTED,
            "A device proved the code and waits for the owner's approval",
            "owner connections that opened the pairing window",
        ),
        doc(
            &PAIRING_FAILED,
            "A wrong pairing code was tried",
            "owner connections that opened the pairing window",
        ),
        doc(
            &PAIRING_WITHDRAWN,
            "A device waiting for approval disconnected or gave up: its request can no longer be approved",
            "owner connections that opened the pairing window",
        ),
        doc(
            &PAIRING_CLOSED,
            "The pairing window closed",
            "owner connections that opened the pairing window",
        ),
    ]
}
