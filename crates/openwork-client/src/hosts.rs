//! The hosts this device is paired with: address, pinned fingerprint and
//! credential, in an owner-only file in the user's config dir.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use openwork_proto::scope::Scope;

/// A paired host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownHost {
    /// The host's friendly name (how `--host` finds it).
    pub name: String,
    pub host_id: String,
    /// `host:port` last used.
    pub address: String,
    /// The pinned certificate fingerprint.
    pub fingerprint: String,
    pub device_id: String,
    pub token: String,
    pub scopes: Vec<Scope>,
    pub paired_at: String,
}

impl KnownHost {
    /// Whether the host was paired over loopback: it is on this machine,
    /// where discovery has nothing to find (loopback is never advertised).
    pub fn is_on_loopback(&self) -> bool {
        match self.address.parse::<std::net::SocketAddr>() {
            Ok(address) => address.ip().is_loopback(),
            Err(_) => self.address.starts_with("localhost:"),
        }
    }
}

/// A problem with the hosts file or finding a host in it.
#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "this device is not paired with any host; pair with `openwork-host client pair ADDR --code CODE`"
    )]
    NonePaired,
    #[error("no paired host is called `{0}` (paired: {1})")]
    Unknown(String, String),
    #[error("this device is paired with several hosts ({0}); choose one with --host NAME")]
    Ambiguous(String),
}

#[derive(Default, Serialize, Deserialize)]
struct HostsFile {
    #[serde(default, rename = "host")]
    hosts: Vec<KnownHost>,
}

/// The hosts file.
pub struct KnownHosts {
    path: PathBuf,
    hosts: Vec<KnownHost>,
}

impl KnownHosts {
    /// The default client dir: `OPENWORK_CLIENT_DIR`, else the platform's config dir.
    pub fn default_dir() -> PathBuf {
        std::env::var_os("OPENWORK_CLIENT_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                directories::ProjectDirs::from("", "", "openwork-host")
                    .map(|p| p.config_dir().to_owned())
            })
            .unwrap_or_else(|| PathBuf::from(".openwork-host"))
    }

    /// Loads `dir/hosts.toml` (empty when missing).
    pub fn load(dir: &Path) -> Result<KnownHosts, HostsError> {
        let path = dir.join("hosts.toml");
        let hosts = match std::fs::read_to_string(&path) {
            Ok(text) => {
                toml::from_str::<HostsFile>(&text)
                    .map_err(|e| HostsError::Read {
                        path: path.display().to_string(),
                        message: e.to_string(),
                    })?
                    .hosts
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(HostsError::Read {
                    path: path.display().to_string(),
                    message: e.to_string(),
                });
            }
        };
        Ok(KnownHosts { path, hosts })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn all(&self) -> &[KnownHost] {
        &self.hosts
    }

    /// Adds a host, replacing an earlier pairing with the same host.
    pub fn add(&mut self, host: KnownHost) {
        self.hosts.retain(|h| h.host_id != host.host_id);
        self.hosts.push(host);
    }

    /// Removes a host by name or id; returns whether it was there.
    pub fn remove(&mut self, name_or_id: &str) -> bool {
        let before = self.hosts.len();
        self.hosts
            .retain(|h| h.name != name_or_id && h.host_id != name_or_id);
        before != self.hosts.len()
    }

    /// A host by name or id, or the only one when `None`.
    pub fn find(&self, name_or_id: Option<&str>) -> Result<&KnownHost, HostsError> {
        let names = || {
            self.hosts
                .iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match name_or_id {
            Some(wanted) => self
                .hosts
                .iter()
                .find(|h| h.name == wanted || h.host_id == wanted)
                .ok_or_else(|| HostsError::Unknown(wanted.to_owned(), names())),
            None => match self.hosts.as_slice() {
                [] => Err(HostsError::NonePaired),
                [only] => Ok(only),
                _ => Err(HostsError::Ambiguous(names())),
            },
        }
    }

    /// Writes the file atomically, readable by the owner only (it holds credentials).
    pub fn save(&self) -> Result<(), HostsError> {
        let err = |source| HostsError::Write {
            path: self.path.display().to_string(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let text = toml::to_string(&HostsFile {
            hosts: self.hosts.clone(),
        })
        .map_err(|e| err(std::io::Error::other(e)))?;
        let tmp = self.path.with_extension("toml.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?;
        file.write_all(text.as_bytes()).map_err(err)?;
        file.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn host(name: &str, id: &str) -> KnownHost {
        KnownHost {
            name: name.into(),
            host_id: id.into(),
            address: "127.0.0.1:4747".into(),
            fingerprint: "ab".into(),
            device_id: "d_1".into(),
            token: "secret".into(),
            scopes: vec![Scope::TasksRun],
            paired_at: "2026-01-01T00:00:00.000Z".into(),
        }
    }

    #[test]
    fn hosts_round_trip_owner_only_and_are_found_by_name_or_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut hosts = KnownHosts::load(dir.path()).unwrap();
        assert!(matches!(hosts.find(None), Err(HostsError::NonePaired)));
        hosts.add(host("desk", "id1"));
        hosts.save().unwrap();
        let mode = std::fs::metadata(dir.path().join("hosts.toml"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let mut hosts = KnownHosts::load(dir.path()).unwrap();
        assert_eq!(hosts.find(None).unwrap().name, "desk");
        hosts.add(host("laptop", "id2"));
        assert!(matches!(hosts.find(None), Err(HostsError::Ambiguous(_))));
        assert_eq!(hosts.find(Some("id2")).unwrap().name, "laptop");
        hosts.add(host("desk-renamed", "id1"));
        assert_eq!(hosts.all().len(), 2, "re-pairing replaces");
        assert!(hosts.remove("laptop"));
        assert!(host("a", "b").is_on_loopback());
        let lan = KnownHost {
            address: "10.0.0.2:4747".into(),
            ..host("a", "b")
        };
        assert!(!lan.is_on_loopback());
        assert!(matches!(
            hosts.find(Some("laptop")),
            Err(HostsError::Unknown(..))
        ));
    }
}
