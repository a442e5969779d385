"""A blocking client for scripts: typed methods, notifications in order, and
a helper to follow a task's output. Single-threaded: calls read the stream
until their answer, keeping the notifications that arrive meanwhile."""

from __future__ import annotations

import collections
import itertools
import os
import time
from dataclasses import dataclass
from typing import Any, Iterator

from . import models as m
from .methods import GeneratedMethods
from .transport import StdioTransport, Transport, TransportError, connect_tls, connect_unix, known_host

FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled", "interrupted"})


class RpcError(Exception):
    """An error object the host answered with."""

    def __init__(self, code: int, message: str, data: Any = None):
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message
        self.data = data

    @property
    def action(self) -> str | None:
        """What the user can do about it (`data.action`), when the host says."""
        return self.data.get("action") if isinstance(self.data, dict) else None


class ConnectionClosed(TransportError):
    """The connection ended before the answer came."""


@dataclass
class Notification:
    """A host notification: its method and typed params (the raw value when unknown)."""

    method: str
    params: Any


class Client(GeneratedMethods):
    """A JSON-RPC client over one transport."""

    def __init__(self, transport: Transport, timeout: float | None = 60.0):
        self.transport = transport
        self.timeout = timeout
        self.server: m.InitializeResult | None = None
        self._ids = itertools.count(1)
        self._pending: collections.deque[tuple[str, Any]] = collections.deque()
        self._closed = False

    # ------------------------------------------------------------ connecting

    @classmethod
    def stdio(cls, data_dir: str | os.PathLike | None = None, binary: str | None = None, **init: Any) -> Client:
        """`openwork-host stdio` on `data_dir`: the machine's owner, every scope."""
        return cls(StdioTransport(binary, data_dir)).initialized(**init)

    @classmethod
    def unix(cls, path: str | os.PathLike, **init: Any) -> Client:
        """The host's owner-only socket (`host.sock` in its data dir)."""
        return cls(connect_unix(path)).initialized(**init)

    @classmethod
    def tls(cls, address: str, fingerprint: str, device_id: str, token: str, **init: Any) -> Client:
        """A paired host over TLS, its certificate pinned, with the device's credential."""
        client = cls(connect_tls(address, fingerprint))
        return client.initialized(auth=m.DeviceAuth(device_id=device_id, token=token), **init)

    @classmethod
    def known(cls, name: str | None = None, client_dir: str | os.PathLike | None = None, **init: Any) -> Client:
        """A host paired with `openwork-host client pair` (its hosts.toml)."""
        h = known_host(name, client_dir)
        return cls.tls(h["address"], h["fingerprint"], h["device_id"], h["token"], **init)

    def initialized(self, **init: Any) -> Client:
        init.setdefault("client_info", m.ClientInfo(name="openwork-host-client-py", version="0.1.0"))
        init.setdefault("protocol_version", "1")
        try:
            self.server = self.initialize(**init)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        self._closed = True
        self.transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------ messages

    def request(self, method: str, params: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        """Sends a request and waits for its result; raises RpcError on an error answer."""
        if self._closed:
            raise ConnectionClosed("the connection to the host is closed")
        request_id = next(self._ids)
        self.transport.write_frame({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}})
        wait = timeout if timeout is not None else self.timeout
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                responses = self._read(remaining)
            except TimeoutError:
                raise TimeoutError(f"no answer to {method} within {wait} s") from None
            if responses is None:
                raise ConnectionClosed(f"the connection closed before {method} was answered")
            message = next((r for r in responses if r.get("id") == request_id), None)
            if message is None:
                continue
            if "error" in message:
                error = message["error"] or {}
                raise RpcError(error.get("code", -32603), error.get("message", "unknown error"), error.get("data"))
            return message.get("result")

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        self.transport.write_frame({"jsonrpc": "2.0", "method": method, "params": params or {}})

    def _request(self, method: str, params: dict[str, Any]) -> Any:
        return self.request(method, params)

    def _notify(self, method: str, params: dict[str, Any]) -> None:
        self.notify(method, params)

    def _read(self, timeout: float | None) -> list[dict[str, Any]] | None:
        """Reads one frame: its notifications are queued in order, its
        responses returned; None at the end of the stream."""
        message = self.transport.read_frame(timeout)
        if message is None:
            self._closed = True
            return None
        responses = []
        for item in message if isinstance(message, list) else [message]:
            if not isinstance(item, dict):
                continue
            if isinstance(item.get("method"), str):
                if "id" not in item:
                    self._pending.append((item["method"], item.get("params")))
            else:
                responses.append(item)
        return responses

    def next_notification(self, timeout: float | None = None) -> Notification:
        """The next notification, its params typed (see NOTIFICATIONS); raises
        TimeoutError, or ConnectionClosed at the end of the stream."""
        wait = timeout if timeout is not None else self.timeout
        deadline = None if wait is None else time.monotonic() + wait
        while not self._pending:
            if self._closed:
                raise ConnectionClosed("the connection to the host closed")
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._read(remaining)  # a stray response is dropped: nothing waits for it
        method, params = self._pending.popleft()
        parse = m.NOTIFICATIONS.get(method)
        return Notification(method, parse.from_json(params) if parse else params)

    # ------------------------------------------------------------ tasks

    def follow(self, task_id: str, timeout: float | None = None) -> Iterator[m.LogChunk | m.TaskUpdate | m.PermissionRequest | m.PermissionResolved]:
        """Yields a followed task's chunks, updates and permission notices in
        order until its final update; other notifications stay queued."""
        other: list[tuple[str, Any]] = []
        try:
            while True:
                note = self.next_notification(timeout)
                if getattr(note.params, "task_id", None) != task_id:
                    other.append((note.method, note.params.to_json() if hasattr(note.params, "to_json") else note.params))
                    continue
                yield note.params
                if isinstance(note.params, m.TaskUpdate) and note.params.status in FINAL_STATUSES:
                    return
        finally:
            self._pending.extendleft(reversed(other))
