//! Paired devices: their credentials (stored only as hashes), scopes and
//! revocation.

use base64::Engine;
use rand::RngCore;
use rusqlite::{OptionalExtension, params};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::Scope;
use crate::clock;
use crate::identity::hex;
use crate::ids;
use crate::protocol::DeviceInfo;
use crate::store::{Store, StoreError};

/// A paired device as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub id: String,
    pub name: String,
    pub scopes: Vec<Scope>,
    pub paired_at: i64,
    pub last_seen_at: Option<i64>,
    pub last_address: Option<String>,
    pub revoked_at: Option<i64>,
}

impl Device {
    /// The wire form, with how many connections the device has open.
    pub fn info(&self, connections: u32) -> DeviceInfo {
        DeviceInfo {
            device_id: self.id.clone(),
            name: self.name.clone(),
            scopes: self.scopes.clone(),
            paired_at: clock::rfc3339(self.paired_at),
            last_seen_at: self.last_seen_at.map(clock::rfc3339),
            last_address: self.last_address.clone(),
            revoked_at: self.revoked_at.map(clock::rfc3339),
            connections,
        }
    }
}

/// The id prefix of a browser the owner enrolled as their console with
/// `openwork-host ui` (other devices' ids start with `d_`). Ids are the
/// host's to choose, so a device cannot give itself this prefix.
pub(crate) const CONSOLE_PREFIX: &str = "o_";

/// Whether `device_id` is the owner's console (enrolled by `openwork-host ui`):
/// such a device acts as the owner (devices, pairing) with its `admin` scope.
pub(crate) fn is_console(device_id: &str) -> bool {
    device_id.starts_with(CONSOLE_PREFIX)
}

impl Device {
    /// A device paired just now from `address`, with a fresh id.
    fn new_paired(name: &str, scopes: &[Scope], address: &str) -> Device {
        Self::new_with_prefix("d_", name, scopes, address)
    }

    fn new_with_prefix(prefix: &str, name: &str, scopes: &[Scope], address: &str) -> Device {
        Device {
            id: ids::random_id(prefix),
            name: name.to_owned(),
            scopes: scopes.to_vec(),
            paired_at: clock::now_ms(),
            last_seen_at: None,
            last_address: Some(address.to_owned()),
            revoked_at: None,
        }
    }
}

/// The device table.
#[derive(Clone)]
pub(crate) struct Devices {
    store: Store,
}

fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn scopes_to_text(scopes: &[Scope]) -> String {
    Scope::join(scopes, " ")
}

fn scopes_from_text(text: &str) -> Vec<Scope> {
    text.split_whitespace().filter_map(Scope::parse).collect()
}

fn device_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Device> {
    Ok(Device {
        id: row.get(0)?,
        name: row.get(1)?,
        scopes: scopes_from_text(&row.get::<_, String>(2)?),
        paired_at: row.get(3)?,
        last_seen_at: row.get(4)?,
        last_address: row.get(5)?,
        revoked_at: row.get(6)?,
    })
}

const COLUMNS: &str = "id, name, scopes, paired_at, last_seen_at, last_address, revoked_at";

impl Devices {
    pub(crate) fn new(store: Store) -> Devices {
        Devices { store }
    }

    /// Creates a device with a fresh 256-bit token; returns the device and the
    /// token, which is never stored and cannot be shown again.
    pub(crate) async fn create(
        &self,
        name: &str,
        scopes: &[Scope],
        address: &str,
    ) -> Result<(Device, String), StoreError> {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        let device = Device::new_paired(name, scopes, address);
        let (row, hash) = (device.clone(), token_hash(&token));
        self.store
            .write(move |c| {
                c.execute(
                    "INSERT INTO devices (id, name, token_hash, scopes, paired_at, last_address) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![row.id, row.name, hash, scopes_to_text(&row.scopes), row.paired_at, row.last_address],
                )
            })
            .await?;
        Ok((device, token))
    }

    /// Creates a browser's device, whose credential is the P-256 public key
    /// `public_key` (SPKI DER): it has no token.
    pub(crate) async fn create_with_key(
        &self,
        name: &str,
        scopes: &[Scope],
        address: &str,
        public_key: Vec<u8>,
    ) -> Result<Device, StoreError> {
        self.insert_with_key(Device::new_paired(name, scopes, address), public_key)
            .await
    }

    /// Creates the owner's console: a browser's device (a key, no token)
    /// whose id marks it as the owner's (`is_console`).
    pub(crate) async fn create_console(
        &self,
        name: &str,
        scopes: &[Scope],
        address: &str,
        public_key: Vec<u8>,
    ) -> Result<Device, StoreError> {
        let device = Device::new_with_prefix(CONSOLE_PREFIX, name, scopes, address);
        self.insert_with_key(device, public_key).await
    }

    async fn insert_with_key(
        &self,
        device: Device,
        public_key: Vec<u8>,
    ) -> Result<Device, StoreError> {
        let row = device.clone();
        self.store
            .write(move |c| {
                c.execute(
                    "INSERT INTO devices (id, name, token_hash, scopes, paired_at, last_address, public_key) VALUES (?1, ?2, '', ?3, ?4, ?5, ?6)",
                    params![row.id, row.name, scopes_to_text(&row.scopes), row.paired_at, row.last_address, public_key],
                )
            })
            .await?;
        Ok(device)
    }

    /// The device if `token` is its credential and it is not revoked. The
    /// comparison of hashes is constant-time. A device with a public key
    /// takes no token.
    pub(crate) async fn authenticate(
        &self,
        device_id: &str,
        token: &str,
        address: &str,
    ) -> Result<Option<Device>, StoreError> {
        let Some((device, stored_hash, key)) = self.credential(device_id).await? else {
            return Ok(None);
        };
        let matches = bool::from(token_hash(token).as_bytes().ct_eq(stored_hash.as_bytes()));
        if !matches || key.is_some() || device.revoked_at.is_some() {
            return Ok(None);
        }
        self.seen(device, address).await.map(Some)
    }

    /// The device if `verify` accepts a signature under its public key and it
    /// is not revoked. A device with a token has no key, and is refused.
    pub(crate) async fn authenticate_signed(
        &self,
        device_id: &str,
        address: &str,
        verify: impl FnOnce(&[u8]) -> bool,
    ) -> Result<Option<Device>, StoreError> {
        let Some((device, _, Some(key))) = self.credential(device_id).await? else {
            return Ok(None);
        };
        if !verify(&key) || device.revoked_at.is_some() {
            return Ok(None);
        }
        self.seen(device, address).await.map(Some)
    }

    /// A device with its token hash and public key.
    async fn credential(
        &self,
        device_id: &str,
    ) -> Result<Option<(Device, String, Option<Vec<u8>>)>, StoreError> {
        let id = device_id.to_owned();
        self.store
            .read(move |c| {
                c.query_row(
                    &format!("SELECT {COLUMNS}, token_hash, public_key FROM devices WHERE id = ?1"),
                    [id],
                    |row| Ok((device_from_row(row)?, row.get(7)?, row.get(8)?)),
                )
                .optional()
            })
            .await
    }

    /// Records that a device just authenticated from `address`.
    async fn seen(&self, device: Device, address: &str) -> Result<Device, StoreError> {
        let (id, address, now) = (device.id.clone(), address.to_owned(), clock::now_ms());
        self.store
            .write(move |c| {
                c.execute(
                    "UPDATE devices SET last_seen_at = ?2, last_address = ?3 WHERE id = ?1",
                    params![id, now, address],
                )
            })
            .await?;
        Ok(device)
    }

    /// Every device, paired first first.
    pub(crate) async fn list(&self) -> Result<Vec<Device>, StoreError> {
        self.store
            .read(|c| {
                let mut stmt = c.prepare(&format!(
                    "SELECT {COLUMNS} FROM devices ORDER BY paired_at, id"
                ))?;
                let rows = stmt.query_map([], device_from_row)?;
                rows.collect()
            })
            .await
    }

    /// Revokes a device; `None` if there is no such device.
    pub(crate) async fn revoke(&self, device_id: &str) -> Result<Option<Device>, StoreError> {
        let (id, now) = (device_id.to_owned(), clock::now_ms());
        self.store
            .write(move |c| {
                c.execute(
                    "UPDATE devices SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                    params![id, now],
                )?;
                c.query_row(
                    &format!("SELECT {COLUMNS} FROM devices WHERE id = ?1"),
                    [id],
                    device_from_row,
                )
                .optional()
            })
            .await
    }

    /// Deletes a device that never got its credential (the client left before approval).
    pub(crate) async fn discard(&self, device_id: &str) -> Result<(), StoreError> {
        let id = device_id.to_owned();
        self.store
            .write(move |c| c.execute("DELETE FROM devices WHERE id = ?1", [id]))
            .await?;
        Ok(())
    }

    /// Records a pairing attempt for the operator's history.
    pub(crate) async fn record_attempt(
        &self,
        address: &str,
        device_name: &str,
        outcome: &str,
    ) -> Result<(), StoreError> {
        let (address, name, outcome, now) = (
            address.to_owned(),
            device_name.to_owned(),
            outcome.to_owned(),
            clock::now_ms(),
        );
        self.store
            .write(move |c| {
                c.execute(
                    "INSERT INTO pairing_attempts (at, address, device_name, outcome) VALUES (?1, ?2, ?3, ?4)",
                    params![now, address, name, outcome],
                )
            })
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_token_works_until_revoked_and_is_stored_only_as_a_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        let devices = Devices::new(store.clone());
        let (device, token) = devices
            .create("phone", &[Scope::TasksRead], "10.0.0.2")
            .await
            .unwrap();
        assert_eq!(token.len(), 43, "256 bits in base64url");
        let found = devices
            .authenticate(&device.id, &token, "10.0.0.2")
            .await
            .unwrap();
        assert_eq!(found.map(|d| d.scopes), Some(vec![Scope::TasksRead]));
        assert!(
            devices
                .authenticate(&device.id, "wrong", "x")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            devices
                .authenticate("d_nope", &token, "x")
                .await
                .unwrap()
                .is_none()
        );
        let stored: String = store
            .read(|c| c.query_row("SELECT token_hash FROM devices", [], |r| r.get(0)))
            .await
            .unwrap();
        assert_ne!(stored, token);
        assert!(!stored.contains(&token));
        devices.revoke(&device.id).await.unwrap();
        assert!(
            devices
                .authenticate(&device.id, &token, "x")
                .await
                .unwrap()
                .is_none()
        );
        store.close();
    }
}
