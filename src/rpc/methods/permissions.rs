//! `permission.reply`, `permission.pending`, `permission.rules`, `permission.forget`, `permission.audit`.

use crate::protocol::{
    Empty, NoParams, PermissionAuditParams, PermissionAuditResult, PermissionForgetParams,
    PermissionPendingResult, PermissionReplyParams, PermissionReplyResult, PermissionRulesResult,
};
use crate::rpc::RpcError;
use crate::rpc::methods::CallContext;

pub(super) async fn reply(
    ctx: CallContext,
    p: PermissionReplyParams,
) -> Result<PermissionReplyResult, RpcError> {
    Ok(ctx.host().reply_permission(p, &ctx.session).await?)
}

pub(super) async fn pending(
    ctx: CallContext,
    _: NoParams,
) -> Result<PermissionPendingResult, RpcError> {
    Ok(PermissionPendingResult {
        requests: ctx.host().pending_permission_requests(),
    })
}

pub(super) async fn rules(
    ctx: CallContext,
    _: NoParams,
) -> Result<PermissionRulesResult, RpcError> {
    Ok(PermissionRulesResult {
        rules: ctx.host().permission_rules().await?,
    })
}

pub(super) async fn forget(ctx: CallContext, p: PermissionForgetParams) -> Result<Empty, RpcError> {
    ctx.host().forget_permission_rule(&p.rule_id).await?;
    Ok(Empty {})
}

pub(super) async fn audit(
    ctx: CallContext,
    p: PermissionAuditParams,
) -> Result<PermissionAuditResult, RpcError> {
    Ok(PermissionAuditResult {
        entries: ctx.host().permission_audit(p).await?,
    })
}
