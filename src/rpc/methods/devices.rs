//! `devices.list` and `devices.revoke`.

use crate::protocol::{DeviceIdParams, DeviceRevokeResult, DevicesListResult};
use crate::rpc::RpcError;
use crate::rpc::methods::CallContext;

pub async fn list(
    ctx: CallContext,
    _: crate::protocol::NoParams,
) -> Result<DevicesListResult, RpcError> {
    Ok(DevicesListResult {
        devices: ctx.host().paired_devices().await?,
    })
}

pub async fn revoke(ctx: CallContext, p: DeviceIdParams) -> Result<DeviceRevokeResult, RpcError> {
    let Some((device, closed)) = ctx.host().revoke_device(&p.device_id).await? else {
        return Err(
            RpcError::not_found(format_args!("device `{}`", p.device_id))
                .with_action("list paired devices with `openwork-host devices list`"),
        );
    };
    tracing::info!(device = %device.id, name = %device.name, closed, "device revoked");
    Ok(DeviceRevokeResult {
        device_id: device.id,
        closed_connections: closed,
    })
}
