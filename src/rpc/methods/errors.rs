//! Where service errors become JSON-RPC errors: the one place that picks codes
//! and the action a user can take.

use crate::rpc::{ErrorCode, RpcError};
use crate::store::StoreError;
use crate::tasks::TaskError;

impl From<TaskError> for RpcError {
    fn from(e: TaskError) -> Self {
        let message = e.to_string();
        match e {
            TaskError::NotFound(_) => RpcError::new(ErrorCode::NOT_FOUND, message)
                .with_action("list tasks with `task.list` to find the right id"),
            TaskError::InvalidSpec(_) => RpcError::invalid_params(message),
            TaskError::CwdOutsideRoots { .. } => RpcError::invalid_params(message).with_action(
                "run the task in a directory inside a workspace root, or add the directory to tasks.workspace_roots in the host's config.toml",
            ),
            TaskError::CwdUnusable { .. } => {
                RpcError::invalid_params(message).with_action("give an existing directory as `cwd`")
            }
            TaskError::AlreadyFinished { .. } => RpcError::conflict(message),
            TaskError::IdempotencyConflict(_) => RpcError::conflict(message)
                .with_action("use a new idempotency key for a different request"),
            TaskError::RuntimeUnavailable { action, .. } => {
                RpcError::new(ErrorCode::RUNTIME_UNAVAILABLE, message).with_action(action)
            }
            TaskError::NoWorkspaceRoot(_) => RpcError::new(ErrorCode::INTERNAL_ERROR, message),
            TaskError::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for RpcError {
    fn from(e: StoreError) -> Self {
        RpcError::internal(format_args!("the host's store failed: {e}")).with_action(
            "check free disk space and permissions of the host's data dir, then see its log",
        )
    }
}
