//! `devices.list`, `devices.revoke` and `devices.revokeSelf`.

use crate::auth::Principal;
use crate::protocol::{DeviceIdParams, DeviceRevokeResult, DevicesListResult, NoParams};
use crate::rpc::methods::CallContext;
use crate::rpc::{ErrorCode, RpcError};

pub(super) async fn list(
    ctx: CallContext,
    _: crate::protocol::NoParams,
) -> Result<DevicesListResult, RpcError> {
    Ok(DevicesListResult {
        devices: ctx.host().paired_devices().await?,
    })
}

/// A device revokes its own pairing (a browser forgetting the host): the
/// answer reaches it, then its connection closes; its other connections are
/// cut off at once and its credential never works again.
pub(super) async fn revoke_self(
    ctx: CallContext,
    _: NoParams,
) -> Result<DeviceRevokeResult, RpcError> {
    let principal = ctx.session.principal();
    let Principal::Device { id, name, .. } = &principal else {
        let error = if principal.is_authenticated() {
            RpcError::conflict(
                "`devices.revokeSelf` is for a paired device; this connection is the host's owner",
            )
            .with_action(
                "revoke a device with `devices.revoke` (`openwork-host devices revoke ID`)",
            )
        } else {
            RpcError::new(
                ErrorCode::UNAUTHORIZED,
                "`devices.revokeSelf` needs an authenticated connection: call `initialize` with the device's `auth` first",
            )
        };
        return Err(error);
    };
    // This connection gives up its rights now and is spared the cut-off, so
    // that the answer reaches it.
    ctx.session.set_principal(Principal::Anonymous);
    let revoked = match ctx.host.revoke_device(id).await {
        Ok(revoked) => revoked,
        Err(e) => {
            ctx.session.set_principal(principal.clone());
            return Err(e.into());
        }
    };
    let Some((device, closed)) = revoked else {
        return Err(RpcError::not_found(format_args!("device `{id}`")));
    };
    tracing::info!(device = %device.id, name = %name, closed, "a device revoked its own pairing");
    let session = ctx.session.clone();
    ctx.after_reply(move || session.close("this device revoked its own pairing"));
    Ok(DeviceRevokeResult {
        device_id: device.id,
        closed_connections: closed,
    })
}

pub(super) async fn revoke(
    ctx: CallContext,
    p: DeviceIdParams,
) -> Result<DeviceRevokeResult, RpcError> {
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
