"""openwork-host's Python client: typed models and methods generated from
schema/openrpc.json, over stdio, the owner's unix socket, or pinned TLS."""

from . import models
from .client import FINAL_STATUSES, Client, ConnectionClosed, Notification, RpcError
from .models import NOTIFICATIONS
from .transport import FingerprintMismatch, TransportError, known_host

__all__ = [
    "Client",
    "ConnectionClosed",
    "FINAL_STATUSES",
    "FingerprintMismatch",
    "NOTIFICATIONS",
    "Notification",
    "RpcError",
    "TransportError",
    "known_host",
    "models",
]
