//! Who a connection is: the registry of open connections, device
//! authentication, and the race between a revocation and a connection
//! taking a device's identity.

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use crate::auth::{Principal, Scope};
use crate::protocol::DeviceAuth;
use crate::rpc::{ErrorCode, RpcError};
use crate::session::{Session, SessionEnd};
use crate::store::StoreError;

use super::HostCore;

/// The host's open connections, and the devices revoked since it started.
#[derive(Default)]
pub(super) struct Connections {
    sessions: Mutex<HashMap<u64, Weak<Session>>>,
    /// Devices revoked since the host started, checked once more after a
    /// connection takes a device's identity (see `admit`).
    revoked: Mutex<HashSet<String>>,
    next_session: AtomicU64,
}

impl Connections {
    fn lock_sessions(&self) -> parking_lot::MutexGuard<'_, HashMap<u64, Weak<Session>>> {
        self.sessions.lock()
    }

    fn lock_revoked(&self) -> parking_lot::MutexGuard<'_, HashSet<String>> {
        self.revoked.lock()
    }

    fn live_sessions(&self) -> Vec<Arc<Session>> {
        self.lock_sessions()
            .values()
            .filter_map(Weak::upgrade)
            .collect()
    }
}

impl HostCore {
    pub fn next_session_id(&self) -> u64 {
        self.connections
            .next_session
            .fetch_add(1, Ordering::Relaxed)
            + 1
    }

    pub fn session_opened(&self, session: &Arc<Session>) {
        self.metrics.connection_opened();
        self.connections
            .lock_sessions()
            .insert(session.id, Arc::downgrade(session));
        tracing::debug!(
            session = session.id,
            transport = session.transport,
            "connection opened"
        );
    }

    pub fn session_closed(&self, session: &Arc<Session>, end: &SessionEnd) {
        self.metrics.connection_closed();
        self.pairing.connection_closed(session.id);
        self.connections.lock_sessions().remove(&session.id);
        tracing::debug!(session = session.id, reason = ?end.reason, "connection closed");
    }

    /// Authenticates a connection: checks the device credential, then gives
    /// the connection that device's identity (see `admit`).
    pub async fn authenticate_session(
        &self,
        session: &Session,
        auth: &DeviceAuth,
    ) -> Result<Principal, RpcError> {
        let principal = if auth.token.is_some() {
            self.authenticate(auth, &session.peer).await?
        } else {
            self.authenticate_browser(session, auth).await?
        };
        self.admit(session, principal)
    }

    /// Gives a connection the principal its credential proved, unless the
    /// device was revoked since the credential was checked. Private to the
    /// host, as `authenticate` is: outside, `authenticate_session` does both.
    ///
    /// A revoke cuts off the connections that have the device's identity.
    /// One that checked the credential just before the revoke, and takes the
    /// identity just after the revoke looked, would escape it; so the
    /// identity is taken first and the revocation checked after. Either the
    /// revoke saw the connection, or this sees the revoke.
    pub(super) fn admit(
        &self,
        session: &Session,
        principal: Principal,
    ) -> Result<Principal, RpcError> {
        session.set_principal(principal.clone());
        if let Principal::Device { id, .. } = &principal
            && self.connections.lock_revoked().contains(id)
        {
            session.set_principal(Principal::Anonymous);
            self.metrics.auth_failure(&session.peer, id);
            tracing::warn!(peer = %session.peer, device = %id, "authentication raced a revocation; refused");
            return Err(unknown_device());
        }
        Ok(principal)
    }

    /// Revokes a device: its token never works again and every connection
    /// it has is cut off before this returns. `None` if there is no such device.
    pub async fn revoke_device(
        &self,
        device_id: &str,
    ) -> Result<Option<(crate::devices::Device, u32)>, StoreError> {
        let Some(device) = self.devices.revoke(device_id).await? else {
            return Ok(None);
        };
        // Recorded before the sweep: `admit` relies on this order.
        self.connections.lock_revoked().insert(device.id.clone());
        let closed = self.cut_off_device(&device.id, "this device's pairing was revoked");
        Ok(Some((device, closed)))
    }

    /// Checks a device credential.
    pub(super) async fn authenticate(
        &self,
        auth: &DeviceAuth,
        peer: &str,
    ) -> Result<Principal, RpcError> {
        let token = auth.token.as_deref().unwrap_or_default();
        let found = if auth.token.is_some() {
            self.devices
                .authenticate(&auth.device_id, token, peer)
                .await?
        } else {
            None
        };
        self.authenticated(auth, found, peer)
    }

    /// Checks a browser's signed credential: the signature must cover this
    /// host, the connection's origin and the nonce it was just given.
    async fn authenticate_browser(
        &self,
        session: &Session,
        auth: &DeviceAuth,
    ) -> Result<Principal, RpcError> {
        let (Some(origin), Some(nonce), Some(signature)) =
            (session.origin(), &auth.nonce, &auth.signature)
        else {
            return self.authenticated(auth, None, &session.peer);
        };
        // Used up whether or not the signature is right: one try per nonce.
        let fresh = session.take_challenge(nonce);
        let message = crate::auth::browser_auth_message(
            &self.identity.host_id,
            origin,
            nonce,
            &auth.device_id,
        );
        let found = if fresh {
            self.devices
                .authenticate_signed(&auth.device_id, &session.peer, |key| {
                    crate::auth::verify_browser_signature(key, message.as_bytes(), signature)
                })
                .await?
        } else {
            None
        };
        self.authenticated(auth, found, &session.peer)
    }

    fn authenticated(
        &self,
        auth: &DeviceAuth,
        found: Option<crate::devices::Device>,
        peer: &str,
    ) -> Result<Principal, RpcError> {
        match found {
            Some(device) => Ok(Principal::Device {
                id: device.id,
                name: device.name,
                scopes: device.scopes,
            }),
            None => {
                self.metrics.auth_failure(peer, &auth.device_id);
                tracing::warn!(peer, device = %auth.device_id, "authentication failed");
                Err(unknown_device())
            }
        }
    }

    /// Whether `principal` may act as the host's owner (devices, pairing).
    pub fn owner_may_act(&self, principal: &Principal) -> bool {
        match principal {
            Principal::Local => true,
            Principal::Device { id, scopes, .. } => {
                (self.config.devices.remote_admin || crate::devices::is_console(id))
                    && scopes.contains(&Scope::Admin)
            }
            Principal::Anonymous => false,
        }
    }

    /// Connections a device has open now.
    pub fn device_connections(&self, device_id: &str) -> u32 {
        self.connections
            .live_sessions()
            .iter()
            .filter(|s| matches!(s.principal(), Principal::Device { id, .. } if id == device_id))
            .count() as u32
    }

    /// Cuts off every connection of a device at once; returns how many.
    fn cut_off_device(&self, device_id: &str, reason: &str) -> u32 {
        let mut closed = 0;
        for session in self.connections.live_sessions() {
            if matches!(session.principal(), Principal::Device { id, .. } if id == device_id) {
                session.cut_off(reason);
                closed += 1;
            }
        }
        closed
    }
}

/// The answer to a credential that does not (or no longer) work.
fn unknown_device() -> RpcError {
    RpcError::new(
        ErrorCode::UNAUTHORIZED,
        "this device is not paired with the host, or its pairing was revoked",
    )
    .with_action(
        "pair this device again (`openwork-host pair` on the host, then `openwork-host client pair`)",
    )
}
