"""A real `openwork-host serve` on a temporary data dir, with TLS on loopback,
driven through its own CLI. Every wait is bounded."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent.parent
sys.path.insert(0, str(HERE.parent))


def host_binary() -> str:
    candidates = [
        os.environ.get("OPENWORK_HOST_BIN"),
        os.environ.get("CARGO_TARGET_DIR") and str(Path(os.environ["CARGO_TARGET_DIR"]) / "debug" / "openwork-host"),
        str(REPO / "target" / "debug" / "openwork-host"),
    ]
    for c in candidates:
        if c and Path(c).exists():
            return c
    raise RuntimeError("no openwork-host binary: run `cargo build` or set OPENWORK_HOST_BIN")


def wait_until(what: str, seconds: float, check):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


class Host:
    def __init__(self, root: Path):
        self.binary = host_binary()
        self.data = root / "data"
        self.work = (root / "work").resolve()
        self.data.mkdir()
        self.work.mkdir()
        self.work = self.work.resolve()
        (self.data / "config.toml").write_text(
            f"[tasks]\nworkspace_roots = [{json.dumps(str(self.work))}]\nkill_grace_ms = 1000\n\n"
            '[pairing]\nfailure_pause_ms = 50\n\n[opencode]\nenabled = "off"\n'
        )
        self.socket = self.data / "host.sock"
        self.process: subprocess.Popen | None = None
        self.address = ""
        self.fingerprint = ""

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "serve", "--no-mdns", "--listen", "127.0.0.1:0", "--log", "warn", "--data-dir", str(self.data)],
            stdin=subprocess.DEVNULL,
        )

        def ready() -> bool:
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(str(self.socket))
                return True
            except OSError:
                return False
            finally:
                s.close()

        wait_until("the host's socket", 20, ready)
        status = json.loads(self.cli("status", "--json"))
        self.fingerprint = status["fingerprint"]
        self.address = next(l["address"] for l in status["listeners"] if l["transport"] == "tls")

    def cli(self, *args: str, timeout: float = 20) -> str:
        out = subprocess.run(
            [self.binary, *args, "--data-dir", str(self.data)], capture_output=True, text=True, timeout=timeout
        )
        if out.returncode != 0:
            raise AssertionError(f"openwork-host {' '.join(args)} failed: {out.stderr}")
        return out.stdout

    def approve(self, device_name: str) -> None:
        """Approves the device once it waits (`devices pending`, `devices approve`)."""

        def waiting():
            pending = json.loads(self.cli("devices", "pending", "--json"))["pending"]
            return next((p["requestId"] for p in pending if p["deviceName"] == device_name), None)

        self.cli("devices", "approve", wait_until("the device to wait for approval", 20, waiting))

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    h = Host(tmp_path_factory.mktemp("openwork"))
    h.start()
    yield h
    h.stop()
