//! The data dir: where the store, config, socket and keys live, and the lock
//! that lets one host at a time own it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
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
    #[error(
        "cannot use the data dir {path}: {source}; check that you (user {me}) may enter it and every directory above it, or pass a --data-dir of your own"
    )]
    Inaccessible {
        path: String,
        me: u32,
        source: std::io::Error,
    },
    #[error(
        "the data dir {path} is not a directory; move that file away, or pass another --data-dir"
    )]
    NotADirectory { path: String },
    #[error(
        "the data dir {path} belongs to {owner}, not to you ({me}); run the host as {owner}, or pass a --data-dir of your own (one that does not exist yet is created for you, owner-only)"
    )]
    OtherOwner {
        path: String,
        owner: String,
        me: String,
    },
    #[error(
        "the data dir {path} is writable by other users (mode {mode:o}), who could replace the host's key, database or socket; {fix}"
    )]
    WritableByOthers {
        path: String,
        mode: u32,
        fix: String,
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

    /// Creates the dir, owner-only (0700), if it does not exist. An
    /// existing dir is used as it is (its mode is never changed: `--data-dir
    /// /tmp` must not strip /tmp's sticky bit), provided it is a directory of
    /// ours that no one else may write to.
    pub(crate) fn create(&self) -> Result<(), DataDirError> {
        let path = self.root.display().to_string();
        let me = nix::unistd::geteuid().as_raw();
        let meta = match std::fs::metadata(&self.root) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return self.make(),
            Err(source) => return Err(DataDirError::Inaccessible { path, me, source }),
        };
        if !meta.is_dir() {
            return Err(DataDirError::NotADirectory { path });
        }
        if meta.uid() != me {
            return Err(DataDirError::OtherOwner {
                path,
                owner: user_name(meta.uid()),
                me: user_name(me),
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o022 != 0 {
            let fix = if mode & 0o1000 != 0 {
                // A shared dir such as /tmp: changing it would break others.
                format!(
                    "it is a shared directory (sticky bit), so pass a dir of your own inside it instead, e.g. --data-dir {}",
                    self.root.join("openwork-host").display()
                )
            } else {
                format!(
                    "make it yours alone with `chmod go-w {path}` (or `chmod 700 {path}`), or pass a --data-dir that does not exist yet (it is created owner-only)"
                )
            };
            return Err(DataDirError::WritableByOthers { path, mode, fix });
        }
        Ok(())
    }

    /// Creates the missing dir (and its missing parents), the dir itself 0700.
    fn make(&self) -> Result<(), DataDirError> {
        let err = |source| DataDirError::Create {
            path: self.root.display().to_string(),
            source,
        };
        if let Some(parent) = self.root.parent() {
            std::fs::create_dir_all(parent).map_err(err)?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(&self.root) {
            Ok(()) => {
                // The umask may have taken bits from 0700; none are added.
                std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
                    .map_err(err)
            }
            // Made by someone else meanwhile: checked as any existing dir.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => self.create(),
            Err(e) => Err(err(e)),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub(crate) fn database(&self) -> PathBuf {
        self.root.join("host.db")
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    pub fn socket(&self) -> PathBuf {
        self.root.join("host.sock")
    }
    pub(crate) fn lock_file(&self) -> PathBuf {
        self.root.join("host.lock")
    }

    /// Takes the exclusive lock that says "a host is running on this dir",
    /// recording our pid in it. Held until the returned guard is dropped.
    ///
    /// A lock whose recorded holder is no longer running is waited for (up
    /// to `ORPHANED_LOCK_WAIT`): a host killed while starting a task leaves
    /// the lock to the child it was forking until that child's `exec`
    /// closes it (moving the child into the task's cgroup, before the exec,
    /// can take a while), and a host restarted at once (systemd, the soak)
    /// must not fail for that.
    pub(crate) fn lock(&self) -> Result<DataDirLock, DataDirError> {
        let deadline = std::time::Instant::now() + ORPHANED_LOCK_WAIT;
        loop {
            match self.try_lock() {
                Err(DataDirError::InUse { pid, .. })
                    if !holder_alive(&pid) && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    fn try_lock(&self) -> Result<DataDirLock, DataDirError> {
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

/// How long a lock held after its recorded holder is gone is waited for.
const ORPHANED_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether the process a lock file names still runs (an unreadable pid
/// counts as running: then nothing is waited for).
fn holder_alive(pid: &str) -> bool {
    match pid.parse::<i32>() {
        Ok(pid) if pid > 0 => {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
                != Err(nix::errno::Errno::ESRCH)
        }
        _ => true,
    }
}

/// "user NAME (UID)", or "user UID" when the name is unknown.
pub fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => format!("user {} ({uid})", user.name),
        _ => format!("user {uid}"),
    }
}

/// Holds the data dir's lock.
pub(crate) struct DataDirLock {
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

    #[test]
    fn a_lock_left_to_a_child_of_a_host_that_is_gone_is_waited_for() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::resolve(Some(tmp.path().join("d"))).unwrap();
        dir.create().unwrap();
        let held = dir.lock().unwrap();
        // As when a host was killed while forking: its pid is in the file
        // and no longer runs, and the lock is still held (here by us) until
        // the child's exec lets it go.
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let gone_pid = gone.id();
        gone.wait().unwrap();
        std::fs::write(dir.lock_file(), gone_pid.to_string()).unwrap();
        let released = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(held);
        });
        let started = std::time::Instant::now();
        let lock = dir.lock();
        assert!(lock.is_ok(), "{:?}", lock.err().map(|e| e.to_string()));
        assert!(started.elapsed() >= std::time::Duration::from_millis(250));
        released.join().unwrap();
    }
}
