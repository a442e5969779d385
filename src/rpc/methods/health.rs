//! `health.get` and `metrics.get`.

use crate::auth::Scope;
use crate::protocol::{HealthReport, MetricsReport, NoParams};
use crate::rpc::RpcError;
use crate::rpc::methods::CallContext;

pub(super) async fn get(ctx: CallContext, _: NoParams) -> Result<HealthReport, RpcError> {
    let details = ctx.session.principal().has(Scope::TasksRead);
    Ok(ctx.host().health(details).await)
}

pub(super) async fn metrics(ctx: CallContext, _: NoParams) -> Result<MetricsReport, RpcError> {
    Ok(ctx.host().metrics_report().await?)
}
