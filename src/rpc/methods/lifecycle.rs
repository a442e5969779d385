//! `initialize`, `shutdown`, `exit`, `$/ping` and `$/cancelRequest`.

use crate::auth::{Principal, Scope};
use crate::protocol::{
    AuthChallenge, CancelRequestParams, Capabilities, CapabilitiesParams, Empty, InitializeParams,
    InitializeResult, NoParams, PROTOCOL_VERSION, ScopeInfo, ServerInfo,
};
use crate::rpc::methods::CallContext;
use crate::rpc::table::Access;
use crate::rpc::{ErrorCode, Id, RpcError};
use crate::session::{Lifecycle, MAX_FAILED_INITIALIZE};

/// `initialize`; an unauthenticated connection that fails it
/// `MAX_FAILED_INITIALIZE` times is closed after the answer, so that one
/// connection cannot guess credentials (or fill the log) without end.
pub(super) async fn initialize(
    ctx: CallContext,
    p: InitializeParams,
) -> Result<InitializeResult, RpcError> {
    let result = initialize_once(&ctx, p).await;
    let Err(mut error) = result else {
        return result;
    };
    if ctx.session.principal().is_authenticated() {
        return Err(error);
    }
    let failures = ctx.session.initialize_failed();
    if failures >= MAX_FAILED_INITIALIZE {
        error.message = format!(
            "{}; this connection failed `initialize` {failures} times and is now closed",
            error.message
        );
        ctx.session.close(format!(
            "`initialize` failed {failures} times on this connection"
        ));
    }
    Err(error)
}

async fn initialize_once(
    ctx: &CallContext,
    p: InitializeParams,
) -> Result<InitializeResult, RpcError> {
    if ctx.session.lifecycle() != Lifecycle::New {
        return Err(
            RpcError::conflict("`initialize` was already called on this connection")
                .with_action("call `initialize` once per connection; connect again to start over"),
        );
    }
    if let Some(version) = &p.protocol_version {
        let major = version.split('.').next().unwrap_or_default();
        if major != PROTOCOL_VERSION {
            return Err(RpcError::invalid_params(format_args!(
                "protocolVersion {version} is not supported: this host speaks version {PROTOCOL_VERSION}"
            ))
            .with_action("update the client or the host so that both speak the same protocol version"));
        }
    }
    if let Some(auth) = &p.auth
        && ctx.session.principal() == Principal::Anonymous
    {
        ctx.host().authenticate_session(&ctx.session, auth).await?;
    }
    let principal = ctx.session.principal();
    ctx.session.set_lifecycle(Lifecycle::Initialized);
    if let Some(client) = &p.client_info {
        tracing::info!(session = ctx.session.id, client = %client.name, version = client.version.as_deref().unwrap_or(""), "initialized");
    }
    Ok(InitializeResult {
        server_info: ServerInfo {
            name: "openwork-host".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        protocol_version: PROTOCOL_VERSION.into(),
        host_id: ctx.host().host_id().to_owned(),
        host_name: ctx.host().host_name().to_owned(),
        capabilities: capabilities(ctx, &principal),
        scopes: principal
            .scopes()
            .into_iter()
            .map(|scope| ScopeInfo {
                scope,
                description: scope.description().into(),
            })
            .collect(),
    })
}

/// What the host offers `principal` now.
fn capabilities(ctx: &CallContext, principal: &Principal) -> Capabilities {
    let host = ctx.host();
    let methods = host
        .methods()
        .names()
        .into_iter()
        .filter(|name| match host.methods().get(name).map(|m| m.access) {
            Some(Access::Scope(scope)) => principal.has(scope),
            Some(Access::Owner) => host.owner_may_act(principal),
            _ => true,
        })
        .map(str::to_owned)
        .collect();
    Capabilities {
        runtimes: host
            .runtimes()
            .into_iter()
            .filter(|r| r.state != "off" && r.state != "not_installed")
            .map(|r| r.name)
            .collect(),
        methods,
        max_frame_bytes: host.config().limits.max_frame_bytes as u64,
        opencode: principal
            .has(Scope::Opencode)
            .then(|| host.opencode_capability(principal)),
        workspace_roots: principal.has(Scope::TasksRun).then(|| {
            host.workspace_roots()
                .iter()
                .map(|r| r.display().to_string())
                .collect()
        }),
    }
}

/// The longest `capabilities.get` waits for OpenCode.
const MAX_OPENCODE_WAIT_S: u64 = 60;

/// `initialize`'s capabilities as they are now: OpenCode's operations are
/// known only once it is ready, which may be after `initialize`.
pub(super) async fn capabilities_get(
    ctx: CallContext,
    p: CapabilitiesParams,
) -> Result<Capabilities, RpcError> {
    let principal = ctx.session.principal();
    if !principal.is_authenticated() {
        return Err(RpcError::new(
            ErrorCode::UNAUTHORIZED,
            "`capabilities.get` needs an authenticated connection: call `initialize` with a paired device's `auth` first",
        ));
    }
    if p.opencode_wait_s.is_some_and(|w| w > MAX_OPENCODE_WAIT_S) {
        return Err(RpcError::invalid_params(format_args!(
            "`opencodeWaitS` must be at most {MAX_OPENCODE_WAIT_S}"
        )));
    }
    if let Some(wait) = p.opencode_wait_s
        && principal.has(Scope::Opencode)
    {
        // Not ready in time is no error: the answer says where OpenCode is.
        ctx.host()
            .wait_for_opencode(std::time::Duration::from_secs(wait))
            .await;
    }
    Ok(capabilities(&ctx, &principal))
}

/// A nonce for a browser to sign in `initialize` (single use, this connection, 60 s).
pub(super) async fn auth_challenge(
    ctx: CallContext,
    _: NoParams,
) -> Result<AuthChallenge, RpcError> {
    Ok(AuthChallenge {
        nonce: ctx.session.new_challenge(),
    })
}

pub(super) async fn shutdown(ctx: CallContext, _: NoParams) -> Result<(), RpcError> {
    ctx.session.set_lifecycle(Lifecycle::ShuttingDown);
    Ok(())
}

pub(super) async fn exit(ctx: CallContext, _: NoParams) -> Result<(), RpcError> {
    ctx.session.close("exit");
    Ok(())
}

pub(super) async fn ping(_: CallContext, _: NoParams) -> Result<Empty, RpcError> {
    Ok(Empty {})
}

pub(super) async fn cancel_request(
    ctx: CallContext,
    p: CancelRequestParams,
) -> Result<(), RpcError> {
    let Some(id) = Id::from_json(p.id.get()) else {
        return Err(
            RpcError::invalid_params("`id` must be a string or a number")
                .with_action("give the `id` of the request to cancel, exactly as it was sent"),
        );
    };
    ctx.session.cancel_request(&id);
    Ok(())
}
