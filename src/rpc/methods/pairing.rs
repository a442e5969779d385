//! `pairing.*`: the device's exchange (`begin`, `confirm`) and the owner's
//! window (`open`, `close`, `status`, `approve`, `deny`).

use crate::protocol::{
    DeviceInfo, Empty, NoParams, PairingApproveParams, PairingBeginParams, PairingBeginResult,
    PairingConfirmParams, PairingOpenParams, PairingRequestIdParams, PairingResult, PairingStatus,
    PairingWindow,
};
use crate::rpc::RpcError;
use crate::rpc::methods::CallContext;

pub(super) async fn begin(
    ctx: CallContext,
    p: PairingBeginParams,
) -> Result<PairingBeginResult, RpcError> {
    let session = &ctx.session;
    // A browser registers a key (it must not hold a bearer token); a native
    // client, whose pairing is bound to its TLS session, gets a token.
    match (session.origin().is_some(), p.public_key.is_some()) {
        (true, false) => {
            return Err(RpcError::invalid_params(
                "pairing from a browser needs `publicKey`: the device's P-256 public key (SPKI DER, base64url), made with WebCrypto and kept non-extractable",
            ));
        }
        (false, true) => {
            return Err(RpcError::invalid_params(
                "`publicKey` is for browsers pairing over the WebSocket (`/rpc`); this connection gets a token",
            )
            .with_action("leave `publicKey` out"));
        }
        _ => {}
    }
    Ok(ctx.host().begin_pairing(session, p)?)
}

pub(super) async fn confirm(
    ctx: CallContext,
    p: PairingConfirmParams,
) -> Result<PairingResult, RpcError> {
    let result = ctx.host().confirm_pairing(&ctx.session, p).await?;
    tracing::info!(device = %result.device_id, peer = %ctx.session.peer, "a device was paired");
    Ok(result)
}

pub(super) async fn open(
    ctx: CallContext,
    p: PairingOpenParams,
) -> Result<PairingWindow, RpcError> {
    let window = ctx.host().open_pairing_window(p)?;
    // The owner's connection hears of requests, wrong codes and the window closing.
    if ctx.session.watch_once("pairing") {
        let (session, mut events) = (ctx.session.clone(), ctx.host().pairing_events());
        ctx.session.spawn_notifier(async move {
            loop {
                match events.recv().await {
                    Ok(frame) => session.notify(frame).await,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }
    Ok(window)
}

pub(super) async fn close(ctx: CallContext, _: NoParams) -> Result<Empty, RpcError> {
    ctx.host().close_pairing_window("closed by the owner");
    Ok(Empty {})
}

pub(super) async fn status(ctx: CallContext, _: NoParams) -> Result<PairingStatus, RpcError> {
    Ok(ctx.host().pairing_status())
}

pub(super) async fn approve(
    ctx: CallContext,
    p: PairingApproveParams,
) -> Result<DeviceInfo, RpcError> {
    Ok(ctx.host().approve_pairing(&p.request_id, p.scopes).await?)
}

pub(super) async fn deny(ctx: CallContext, p: PairingRequestIdParams) -> Result<Empty, RpcError> {
    ctx.host().deny_pairing(&p.request_id).await?;
    Ok(Empty {})
}
