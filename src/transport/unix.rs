//! The local unix socket: owner-only (0600) and checked against the peer's uid.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tokio::net::{UnixListener, UnixStream};

/// The longest path a unix socket address can hold on Linux.
const MAX_SOCKET_PATH: usize = 107;

/// Errors binding the local socket.
#[derive(Debug, thiserror::Error)]
pub enum UnixError {
    #[error(
        "the socket path {path} is {len} bytes, over the {MAX_SOCKET_PATH}-byte limit of unix sockets; use a shorter --data-dir"
    )]
    PathTooLong { path: String, len: usize },
    #[error("cannot bind the local socket {path}: {source}")]
    Bind { path: String, source: io::Error },
}

/// Binds the socket at `path`, replacing a stale one, and makes it owner-only.
///
/// The caller must hold the data dir's lock, so that any socket file already
/// there was left by a host that is no longer running.
pub(crate) fn bind(path: &Path) -> Result<UnixListener, UnixError> {
    let shown = path.display().to_string();
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(UnixError::PathTooLong { path: shown, len });
    }
    let bind_err = |source| UnixError::Bind {
        path: shown.clone(),
        source,
    };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    Ok(listener)
}

/// Whether the peer runs as the same user as this process.
///
/// The socket's mode already keeps others out; this is the second lock on the door.
pub(crate) fn peer_is_owner(stream: &UnixStream) -> bool {
    match stream.peer_cred() {
        Ok(cred) => cred.uid() == nix::unistd::getuid().as_raw(),
        Err(_) => false,
    }
}

/// Connects to a host's local socket.
pub async fn connect(path: &Path) -> io::Result<UnixStream> {
    UnixStream::connect(path).await
}
