//! Where service errors become JSON-RPC errors: the one place that picks codes
//! and the action a user can take.

use crate::pairing::PairingError;
use crate::pairing::console::ConsoleError;
use crate::permissions::PermissionError;
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
            TaskError::AlreadyFinished { .. } => RpcError::conflict(message)
                .with_action("nothing to stop; see the task's final record with `task.get`"),
            TaskError::IdempotencyConflict(_) => RpcError::conflict(message)
                .with_action("use a new idempotency key for a different request"),
            TaskError::RuntimeUnavailable { action, .. } => {
                RpcError::new(ErrorCode::RUNTIME_UNAVAILABLE, message).with_action(action)
            }
            TaskError::NoWorkspaceRoot(_) | TaskError::ProcessTree(_) => RpcError::new(ErrorCode::INTERNAL_ERROR, message),
            TaskError::SessionInUse(_) => RpcError::conflict(message).with_action(
                "wait for that task to end or cancel it (`task.list` shows it running), or leave out `sessionId` for a new session",
            ),
            TaskError::Store(e) => e.into(),
        }
    }
}

impl From<ConsoleError> for RpcError {
    fn from(e: ConsoleError) -> Self {
        let message = e.to_string();
        let again = "run `openwork-host ui` on the host for a new link";
        match e {
            ConsoleError::BadTtl
            | ConsoleError::BadKey(_)
            | ConsoleError::BadKeyEncoding
            | ConsoleError::BadName(_) => RpcError::invalid_params(message),
            ConsoleError::NoListener => RpcError::conflict(message)
                .with_action("start the host with a network listener (`openwork-host serve`, without `--listen none`)"),
            ConsoleError::NoLoopbackListener { .. } => RpcError::conflict(message)
                .with_action("serve on loopback too, e.g. `openwork-host serve --listen 127.0.0.1:4747 --listen ADDR:4747`, or on every interface ([::]:4747, the default)"),
            ConsoleError::NotBrowser => RpcError::conflict(message)
                .with_action("open the link in a browser on the host's machine"),
            ConsoleError::NotLocal { .. } => RpcError::new(ErrorCode::FORBIDDEN, message)
                .with_action("open the link exactly as `openwork-host ui` printed it, in a browser on the host's machine"),
            ConsoleError::Used | ConsoleError::Expired | ConsoleError::Unknown => {
                RpcError::new(ErrorCode::UNAUTHORIZED, message).with_action(again)
            }
            ConsoleError::Store(e) => e.into(),
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

impl From<PairingError> for RpcError {
    fn from(e: PairingError) -> Self {
        let message = e.to_string();
        let new_code = "ask the host's owner to run `openwork-host pair` for a new code";
        match e {
            PairingError::NotTls => RpcError::conflict(message)
                .with_action("connect to the host's TLS port (`openwork-host client pair ADDR --code CODE`)"),
            PairingError::NoWindow => RpcError::conflict(message).with_action(new_code),
            PairingError::Expired => RpcError::conflict(message)
                .with_data("reason", "expired".into())
                .with_action(new_code),
            PairingError::WindowClosed(_) => RpcError::conflict(message)
                .with_data("reason", "closed".into())
                .with_action(new_code),
            PairingError::WindowOpen { expires_in } => RpcError::conflict(message)
                .with_data("expiresInS", expires_in.as_secs().into())
                .with_action("run `openwork-host pair --replace` to close it and open a new one, or wait until a device has used its code or it has expired"),
            PairingError::StaleCode { remaining, .. } => RpcError::new(ErrorCode::UNAUTHORIZED, message)
                .with_data("attemptsLeft", remaining.into())
                .with_data("reason", "stale".into())
                .with_action("type the newest code `openwork-host pair` shows on the host, or ask the host's owner to run `openwork-host pair` again"),
            PairingError::NotDelivered => RpcError::conflict(message)
                .with_action("the device can pair again with the same code while the window is open"),
            PairingError::NoListener => RpcError::conflict(message)
                .with_action("start the host with a network listener (`openwork-host serve --listen 0.0.0.0:4747`)"),
            PairingError::TooManyFailures(_) => RpcError::new(ErrorCode::RATE_LIMITED, message)
                .with_data("reason", "closed".into())
                .with_action(new_code),
            PairingError::Paused { retry_after } => RpcError::new(ErrorCode::RATE_LIMITED, message)
                .with_data("retryAfterMs", (retry_after.as_millis() as u64).into())
                .with_action("check the code and try again in a moment"),
            PairingError::Busy => RpcError::new(ErrorCode::RATE_LIMITED, message)
                .with_action("try again in a minute, once the other device is done"),
            PairingError::NoExchange(_) => {
                RpcError::conflict(message).with_action("start again with `pairing.begin` on this connection")
            }
            PairingError::WrongCode { remaining } => RpcError::new(ErrorCode::UNAUTHORIZED, message)
                .with_data("attemptsLeft", remaining.into())
                .with_action("check the code shown by `openwork-host pair` on the host and type it again; if it was right, someone may be between this device and the host"),
            PairingError::Invalid(_) => RpcError::invalid_params(message),
            PairingError::Denied => RpcError::new(ErrorCode::FORBIDDEN, message)
                .with_action("if that was a mistake, ask the host's owner to open a new pairing window (`openwork-host pair`) and pair again"),
            PairingError::ApprovalTimeout | PairingError::ClosedBeforeApproval(_) => RpcError::conflict(message)
                .with_action("ask the host's owner to approve the device in `openwork-host pair`, then pair again"),
            PairingError::NoRequest(_) => RpcError::new(ErrorCode::NOT_FOUND, message)
                .with_action("see waiting devices with `openwork-host devices pending`"),
            PairingError::DeviceLeft => RpcError::conflict(message)
                .with_action("pair again, and stay connected until the host's owner approves the device"),
            PairingError::Store(e) => e.into(),
        }
    }
}

impl From<PermissionError> for RpcError {
    fn from(e: PermissionError) -> Self {
        let message = e.to_string();
        match e {
            PermissionError::AlreadyAnswered { .. } => RpcError::conflict(message),
            PermissionError::Unknown(_) => RpcError::conflict(message)
                .with_action("it may have been answered, expired, or its task ended; see the task with `task.get`"),
            PermissionError::AlwaysNotOffered(_) => RpcError::invalid_params(message)
                .with_action("answer `once` or `reject`"),
            PermissionError::NoRule(_) => RpcError::new(ErrorCode::NOT_FOUND, message)
                .with_action("list remembered rules with `permission.rules`"),
            PermissionError::Store(e) => e.into(),
        }
    }
}
