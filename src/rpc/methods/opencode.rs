//! `opencode.*`: every operation of OpenCode's API, by its operation id,
//! with params mapped onto path, query and body by name.

use std::time::Duration;

use serde_json::Value;
use serde_json::value::RawValue;

use crate::auth::Scope;
use crate::rpc::methods::{CallContext, require_scope};
use crate::rpc::table::BoxFuture;
use crate::rpc::{ErrorCode, RpcError};
use crate::runtime::opencode::access;

/// Calls `opencode.<operationId>`.
pub(super) fn call(
    ctx: CallContext,
    method: String,
    params: Option<Box<RawValue>>,
) -> BoxFuture<Result<Box<RawValue>, RpcError>> {
    Box::pin(async move {
        let op_id = method
            .strip_prefix("opencode.")
            .unwrap_or(&method)
            .to_owned();
        let (client, operations) = ctx
            .host()
            .opencode_api(Duration::from_secs(10))
            .await
            .map_err(|e| {
                RpcError::new(ErrorCode::RUNTIME_UNAVAILABLE, e.to_string()).with_action(e.action())
            })?;
        let Some(op) = operations.by_id.get(&op_id).filter(|op| !op.streams) else {
            let message = if operations.by_id.contains_key(&op_id) {
                format!(
                    "`{method}` streams events; the host follows OpenCode's events itself (see `task.run` with `runtime: \"opencode\"`)"
                )
            } else {
                format!("OpenCode has no operation `{op_id}`")
            };
            return Err(RpcError::new(ErrorCode::METHOD_NOT_FOUND, message)
                .with_action("the operations OpenCode offers are listed in `initialize`'s (or `capabilities.get`'s) capabilities.opencode"));
        };
        let mut params = match params {
            None => serde_json::Map::new(),
            Some(raw) => match serde_json::from_str::<Value>(raw.get()) {
                Ok(Value::Object(map)) => map,
                _ => {
                    return Err(RpcError::invalid_params(
                        "params must be an object with named members",
                    ));
                }
            },
        };
        if let Some(why) = access::needs_admin(&op.id, &params) {
            require_scope(
                &ctx.session.principal(),
                Scope::Admin,
                &format!("`{method}`"),
                Some(why),
            )?;
        }
        // OpenCode works in a directory: keep it inside the workspace roots.
        let directory = match params.get("directory") {
            Some(Value::String(dir)) => Some(dir.clone()),
            Some(_) => return Err(RpcError::invalid_params("`directory` must be a string")),
            None => None,
        };
        if op.query_params.iter().any(|q| q == "directory") {
            let resolved = ctx.host().workspace_dir(directory.as_deref())?;
            params.insert(
                "directory".to_owned(),
                Value::String(resolved.display().to_string()),
            );
        }
        let result = client
            .call(op, params)
            .await
            .map_err(|e| ctx.host().opencode_error(e))?;
        serde_json::value::to_raw_value(&result).map_err(RpcError::internal)
    })
}
