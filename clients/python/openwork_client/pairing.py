"""Pairing a device with a host, as openwork-proto's pairing/crypto.rs does it:
SPAKE2 (python-spake2, which RustCrypto's spake2 interoperates with) with the
code mixed into the TLS session's exported keying material, key confirmation
both ways, then the owner's approval.

Python's ssl module cannot export keying material, so this one connection
uses pyOpenSSL: `pip install openwork-host-client[pairing]`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import select
import socket
import struct
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from OpenSSL import SSL
from spake2 import SPAKE2_A

from .client import Client, RpcError
from .transport import ALPN, SERVER_NAME, FingerprintMismatch, Transport, parse_address

EXPORTER_LABEL = b"EXPORTER-openwork-pairing-v1"
CLIENT_IDENTITY = b"openwork-client"
HOST_IDENTITY = b"openwork-host"


class PairingError(Exception):
    """Pairing failed; the message says what to do."""


@dataclass
class PairedHost:
    """What to keep (the token is a secret) to connect again with `Client.tls`."""

    address: str
    host_id: str
    host_name: str
    fingerprint: str
    device_id: str
    token: str
    scopes: list[str]


def pairing_password(code: str, exporter: bytes) -> bytes:
    return hmac.new(exporter, b"openwork pairing code v1\0" + code.encode(), hashlib.sha256).digest()


def transcript(exporter: bytes, fingerprint: str, device_name: str, scopes: list[str], client_msg: bytes, host_msg: bytes) -> bytes:
    h = hashlib.sha256()
    for item in (
        b"openwork-pairing-transcript-v1",
        exporter,
        hashlib.sha256(client_msg).digest(),
        hashlib.sha256(host_msg).digest(),
        fingerprint.encode(),
        device_name.encode(),
        " ".join(scopes).encode(),
    ):
        h.update(struct.pack(">Q", len(item)))
        h.update(item)
    return h.digest()


def confirmations(key: bytes, t: bytes) -> tuple[bytes, bytes]:
    """(host's, client's) confirmation MACs."""

    def mac(info: bytes, role: bytes) -> bytes:
        k = HKDF(algorithm=hashes.SHA256(), length=32, salt=t, info=info).derive(key)
        return hmac.new(k, t + role, hashlib.sha256).digest()

    return mac(b"openwork pairing host confirmation", b"host"), mac(b"openwork pairing client confirmation", b"client")


class _PyOpenSSLTransport(Transport):
    """The framed transport over a pyOpenSSL connection (one thread only)."""

    def __init__(self, conn: SSL.Connection, raw: socket.socket):
        super().__init__()
        self.conn = conn
        self.raw = raw

    def _recv(self, timeout: float | None) -> bytes:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                return self.conn.recv(1 << 16)
            except SSL.WantReadError:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not select.select([self.raw], [], [], remaining)[0]:
                    raise TimeoutError from None
            except (SSL.ZeroReturnError, SSL.SysCallError):
                return b""

    def _send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[self.conn.send(view) :]
            except SSL.WantWriteError:
                select.select([], [self.raw], [], 15)
            except SSL.WantReadError:
                select.select([self.raw], [], [], 15)

    def close(self) -> None:
        try:
            self.conn.shutdown()
        except SSL.Error:
            pass
        self.raw.close()


def pair(
    address: str,
    code: str,
    device_name: str,
    scopes: list[str] | None = None,
    expected_fingerprint: str | None = None,
    approval_timeout: float = 300.0,
) -> PairedHost:
    """Pairs with the host at `address` (`host:port`) using the code its owner
    sees, and waits for the owner's approval."""
    host, port = parse_address(address)
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_min_proto_version(SSL.TLS1_3_VERSION)
    context.set_max_proto_version(SSL.TLS1_3_VERSION)
    context.set_alpn_protos([ALPN.encode()])
    # No CA vouches for the host's self-signed certificate: the code does.
    context.set_verify(SSL.VERIFY_NONE)
    raw = socket.create_connection((host, port), timeout=15)
    conn = SSL.Connection(context, raw)
    conn.set_tlsext_host_name(SERVER_NAME.encode())
    conn.set_connect_state()
    raw.setblocking(False)
    deadline = time.monotonic() + 15
    while True:
        try:
            conn.do_handshake()
            break
        except (SSL.WantReadError, SSL.WantWriteError) as want:
            remaining = deadline - time.monotonic()
            reading = isinstance(want, SSL.WantReadError)
            ready = select.select([raw] if reading else [], [] if reading else [raw], [], max(0.0, remaining))
            if remaining <= 0 or not any(ready):
                raw.close()
                raise PairingError(f"timed out in TLS with {address}") from None
        except SSL.Error as e:
            raw.close()
            raise PairingError(f"TLS with {address} failed: {e}") from e
    cert = conn.get_peer_certificate(as_cryptography=True)
    fingerprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest() if cert else ""
    if expected_fingerprint and fingerprint != expected_fingerprint.lower():
        raw.close()
        raise FingerprintMismatch(address, expected_fingerprint.lower(), fingerprint)
    exporter = conn.export_keying_material(EXPORTER_LABEL, 32)
    client = Client(_PyOpenSSLTransport(conn, raw), timeout=approval_timeout)
    name = device_name.strip()
    try:
        spake = SPAKE2_A(pairing_password(code, exporter), idA=CLIENT_IDENTITY, idB=HOST_IDENTITY)
        client_msg = spake.start()
        begun = client.pairing_begin(device_name=name, scopes=scopes, spake=base64.b64encode(client_msg).decode())
        host_msg = base64.b64decode(begun.spake)
        try:
            key = spake.finish(host_msg)
        except Exception as e:
            raise PairingError(f"the host sent a malformed SPAKE2 message: {e}") from e
        t = transcript(exporter, fingerprint, name, list(begun.scopes), client_msg, host_msg)
        host_mac, client_mac = confirmations(key, t)
        if not hmac.compare_digest(host_mac, base64.b64decode(begun.host_confirm)):
            raise PairingError(
                "the host could not prove it knows the code: the code is wrong, or someone is "
                "between you and the host. Check the code shown by `openwork-host pair` and try again"
            )
        result = client.pairing_confirm(exchange_id=begun.exchange_id, client_confirm=base64.b64encode(client_mac).decode())
    except RpcError as e:
        raise PairingError(f"the host refused: {e.message}" + (f" ({e.action})" if e.action else "")) from e
    finally:
        client.close()
    if result.token is None:
        # A native client always gets a token; only a browser's key pairing has none.
        raise PairingError("the host registered no token for this device")
    return PairedHost(
        address=f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        host_id=result.host_id,
        host_name=result.host_name,
        fingerprint=fingerprint,
        device_id=result.device_id,
        token=result.token,
        scopes=list(result.scopes),
    )
