//! The data dir: where the store, config, socket and keys live, and the lock
//! that lets one host at a time own it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// Errors preparing the data dir.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error(
        "no data dir given and the platform has none; pass --data-dir or set OPENWORK_HOST_DIR"
    )]
    NoDefault,
    #[error("cannot create the data dir {path}: {source}")]
    Create {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "another openwork-host (pid {pid}) is already using the data dir {path}; stop it first, or pass a different --data-dir"
    )]
    InUse { path: String, pid: String },
}

/// The paths inside a data dir.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// The dir given, else the platform's data dir for openwork-host.
    pub fn resolve(given: Option<PathBuf>) -> Result<DataDir, DataDirError> {
        let root = match given {
            Some(path) => path,
            None => directories::ProjectDirs::from("", "", "openwork-host")
                .map(|p| p.data_dir().to_owned())
                .ok_or(DataDirError::NoDefault)?,
        };
        // An absolute path, so that the socket path and messages are unambiguous.
        let root = if root.is_absolute() {
            root
        } else {
            std::env::current_dir()
                .map(|cwd| cwd.join(&root))
                .unwrap_or(root)
        };
        Ok(DataDir { root })
    }

    /// Creates the dir, owner-only, if it does not exist.
    pub fn create(&self) -> Result<(), DataDirError> {
        let err = |source| DataDirError::Create {
            path: self.root.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&self.root).map_err(err)?;
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700)).map_err(err)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn database(&self) -> PathBuf {
        self.root.join("host.db")
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    pub fn socket(&self) -> PathBuf {
        self.root.join("host.sock")
    }
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("host.lock")
    }

    /// Takes the exclusive lock that says "a host is running on this dir",
    /// recording our pid in it. Held until the returned guard is dropped.
    pub fn lock(&self) -> Result<DataDirLock, DataDirError> {
        let path = self.lock_file();
        let shown = path.display().to_string();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|source| DataDirError::Lock {
                path: shown.clone(),
                source,
            })?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                let pid = std::process::id().to_string();
                let written = lock
                    .set_len(0)
                    .and_then(|()| lock.rewind())
                    .and_then(|()| lock.write_all(pid.as_bytes()));
                written.map_err(|source| DataDirError::Lock {
                    path: shown,
                    source,
                })?;
                Ok(DataDirLock { _lock: lock })
            }
            Err((mut file, _)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                Err(DataDirError::InUse {
                    path: self.root.display().to_string(),
                    pid: if pid.trim().is_empty() {
                        "unknown".to_owned()
                    } else {
                        pid.trim().to_owned()
                    },
                })
            }
        }
    }
}

/// Holds the data dir's lock.
pub struct DataDirLock {
    _lock: Flock<File>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_dir_is_refused_with_the_holder_pid() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::resolve(Some(tmp.path().join("d"))).unwrap();
        dir.create().unwrap();
        let mode = std::fs::metadata(dir.root()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let held = dir.lock().unwrap();
        let err = dir.lock().err().unwrap().to_string();
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        drop(held);
        dir.lock().unwrap();
    }
}
