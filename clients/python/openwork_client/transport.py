"""Byte streams to a host, each carrying LSP-framed JSON-RPC: the host's
`stdio` command, its owner-only unix socket, or TLS with the host's
certificate pinned by SHA-256 fingerprint."""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

#: The host's ALPN protocol id.
ALPN = "openwork/1"
#: The name sent in SNI; the certificate is checked by fingerprint, not by name.
SERVER_NAME = "openwork-host"
MAX_HEADER = 8192


class TransportError(Exception):
    """The connection failed or the host sent a frame that cannot be read."""


class FingerprintMismatch(TransportError):
    """The host presented another certificate than the one pinned."""

    def __init__(self, address: str, expected: str, got: str):
        super().__init__(
            f"the host at {address} presented certificate {got}, but {expected} is pinned: "
            "the host may be impersonated. If it was reinstalled or its identity reset, pair again"
        )
        self.expected = expected
        self.got = got


def encode_frame(message: Any) -> bytes:
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


class Transport:
    """A framed byte stream. Frames are cut from an internal buffer, so a
    read that times out loses nothing; no thread is needed (TLS objects must
    not be read and written from two threads at once)."""

    def __init__(self, max_frame_bytes: int = 64 << 20):
        self._buffer = bytearray()
        self._max = max_frame_bytes

    def _recv(self, timeout: float | None) -> bytes:
        """Some bytes (b"" at the end); raises TimeoutError when none came in time."""
        raise NotImplementedError

    def _send(self, data: bytes) -> None:
        raise NotImplementedError

    def write_frame(self, message: Any) -> None:
        try:
            self._send(encode_frame(message))
        except (OSError, ValueError) as e:
            raise TransportError(f"cannot write to the host: {e}") from e

    def read_frame(self, timeout: float | None = None) -> Any | None:
        """The next message, None at the end of the stream; raises TimeoutError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            frame = self._take_frame()
            if frame is not None:
                try:
                    return json.loads(frame)
                except ValueError as e:
                    raise TransportError(f"the host sent a frame that is not JSON: {e}") from e
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                data = self._recv(remaining)
            except (TimeoutError, socket.timeout):
                raise TimeoutError("no frame from the host in time") from None
            except OSError as e:
                raise TransportError(f"cannot read from the host: {e}") from e
            if not data:
                return None
            self._buffer += data

    def _take_frame(self) -> bytes | None:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEADER:
                raise TransportError("frame header longer than 8 KiB")
            return None
        length = None
        for line in bytes(self._buffer[:end]).split(b"\r\n"):
            name, sep, value = line.partition(b":")
            if not sep:
                raise TransportError(f"malformed header line {line!r}")
            if name.strip().lower() == b"content-length":
                if not value.strip().isdigit():
                    raise TransportError(f"bad Content-Length {value!r}")
                length = int(value)
        if length is None:
            raise TransportError("frame without Content-Length")
        if length > self._max:
            raise TransportError(f"frame of {length} bytes is over the {self._max}-byte limit")
        start = end + 4
        if len(self._buffer) < start + length:
            return None
        frame = bytes(self._buffer[start : start + length])
        del self._buffer[: start + length]
        return frame

    def close(self) -> None:
        pass


class SocketTransport(Transport):
    """A transport over a connected socket (unix, or TLS with the ssl module)."""

    def __init__(self, sock: socket.socket, max_frame_bytes: int = 64 << 20):
        super().__init__(max_frame_bytes)
        self.socket = sock

    def _recv(self, timeout: float | None) -> bytes:
        self.socket.settimeout(timeout)
        return self.socket.recv(1 << 16)

    def _send(self, data: bytes) -> None:
        self.socket.settimeout(None)
        self.socket.sendall(data)

    def close(self) -> None:
        try:
            self.socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.socket.close()


class StdioTransport(Transport):
    """Spawns `openwork-host stdio`: the running daemon on that data dir (or an
    in-process host when none runs), as the machine's owner."""

    def __init__(self, binary: str | None = None, data_dir: str | os.PathLike | None = None):
        super().__init__()
        binary = binary or os.environ.get("OPENWORK_HOST_BIN") or shutil.which("openwork-host")
        if not binary:
            raise TransportError("openwork-host is not on PATH: pass binary= or set OPENWORK_HOST_BIN")
        args = [binary, "stdio"]
        if data_dir is not None:
            args += ["--data-dir", str(data_dir)]
        self.process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        assert self.process.stdin and self.process.stdout
        self._out = self.process.stdout.fileno()

    def _recv(self, timeout: float | None) -> bytes:
        ready, _, _ = select.select([self._out], [], [], timeout)
        if not ready:
            raise TimeoutError
        return os.read(self._out, 1 << 16)

    def _send(self, data: bytes) -> None:
        assert self.process.stdin
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def close(self) -> None:
        # With its input ended, the host finishes streaming what this
        # connection started, then exits.
        assert self.process.stdin and self.process.stdout
        try:
            self.process.stdin.close()
        except OSError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()


def connect_unix(path: str | os.PathLike) -> SocketTransport:
    """The host's owner-only socket (`host.sock` in its data dir)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError as e:
        sock.close()
        raise TransportError(f"cannot connect to {path}: {e}") from e
    return SocketTransport(sock)


def parse_address(address: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port`."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise TransportError(f"expected host:port, got {address!r}")
    return host.strip("[]"), int(port)


def tls_context() -> ssl.SSLContext:
    """TLS 1.3 only, the host's ALPN id, and no CA check: the pin is the check.
    TLS still verifies the handshake signature, so a peer presenting the
    pinned certificate must hold its key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.set_alpn_protocols([ALPN])
    return context


def connect_tls(address: str, fingerprint: str, timeout: float = 15.0) -> SocketTransport:
    """Connects to a paired host, refusing any certificate but the pinned one."""
    host, port = parse_address(address)
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        raise TransportError(f"cannot reach {address}: {e}") from e
    try:
        sock = tls_context().wrap_socket(raw, server_hostname=SERVER_NAME)
    except (OSError, ssl.SSLError) as e:
        raw.close()
        raise TransportError(f"TLS with {address} failed: {e}") from e
    der = sock.getpeercert(binary_form=True) or b""
    got = hashlib.sha256(der).hexdigest()
    if got != fingerprint.lower():
        sock.close()
        raise FingerprintMismatch(address, fingerprint.lower(), got)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return SocketTransport(sock)


def known_host(name: str | None = None, client_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """A host paired with `openwork-host client pair`, from its hosts.toml
    (`address`, `fingerprint`, `device_id`, `token`, ...)."""
    import tomllib

    directory = Path(
        client_dir
        or os.environ.get("OPENWORK_CLIENT_DIR")
        or Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "openwork-host"
    )
    path = directory / "hosts.toml"
    try:
        hosts = tomllib.loads(path.read_text()).get("host", [])
    except FileNotFoundError:
        raise TransportError(f"no paired hosts ({path} does not exist): pair with `openwork-host client pair`") from None
    matches = [h for h in hosts if name is None or name in (h.get("name"), h.get("host_id"))]
    if len(matches) != 1:
        names = ", ".join(h.get("name", "?") for h in hosts) or "none"
        raise TransportError(f"{'no' if not matches else 'more than one'} paired host matches {name!r} (paired: {names})")
    return matches[0]
