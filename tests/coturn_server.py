"""A real coturn (Debian's `coturn`, the `turnserver` binary) on free loopback ports, for the TURN tests."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from .redis_server import free_port, stop_process

START_TIMEOUT = 10.0
REALM = "sfuctl.test"


@dataclass(frozen=True)
class Coturn:
    port: int
    username: str | None  # a static long-term user, or None with `secret`
    credential: str | None
    secret: str | None  # coturn's static-auth-secret (use-auth-secret), or None
    log: Path
    transport: str = "udp"  # how clients reach coturn (it listens on UDP and TCP alike; relays are UDP)

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport={self.transport}"

    def relayed_addresses(self) -> set[str]:
        """Every relayed address coturn allocated so far ("127.0.0.1:PORT"), from its log."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return set(re.findall(r"Local relay addr: (127\.0\.0\.1:\d+)", text))

    def deleted_allocations(self) -> int:
        """Allocations their clients deleted (a Refresh with lifetime 0, RFC 8656 section 7), from its log."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return len(re.findall(r"refreshed, realm=<[^>]*>, username=<[^>]*>, lifetime=0\b", text))

    def tcp_clients(self) -> int:
        """TCP connections clients opened to coturn so far, from its log (not the fixture's readiness check)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text.count("tcp or tls connected to") - 1


@contextmanager
def coturn(secret: str | None = None, transport: str = "udp") -> Iterator[Coturn]:
    """Start turnserver on 127.0.0.1 with a static user (or, given `secret`, REST credentials only) and yield it,
    its URL naming `transport`; stop it after. Loopback peers must be allowed explicitly, and the relay bound to
    127.0.0.1."""
    binary = shutil.which("turnserver")
    if binary is None:
        pytest.skip("turnserver is not installed (Debian package coturn)")
    port = free_port()
    auth = ["--use-auth-secret", "--static-auth-secret", secret] if secret else ["--lt-cred-mech", "--user", "sfuctl:sfuctl-pass"]
    with tempfile.TemporaryDirectory() as directory:
        log = Path(directory) / "turn.log"
        server = Coturn(port, None if secret else "sfuctl", None if secret else "sfuctl-pass", secret, log, transport)
        process = subprocess.Popen(
            [binary, "-n", "--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1", "--allow-loopback-peers",
             "--listening-port", str(port),
             "--realm", REALM, *auth, "--no-tls", "--no-dtls", "--no-cli", "--fingerprint", "--verbose", "--no-stdout-log",
             "--simple-log", "--log-file", str(log), "--pidfile", str(Path(directory) / "turn.pid"),
             "--userdb", str(Path(directory) / "turndb")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            _wait_ready(port, process, log)
            yield server
        finally:
            stop_process(process)


def _wait_ready(port: int, process: subprocess.Popen, log: Path) -> None:
    """Wait until the TCP listener on `port` takes connections (coturn opens UDP and TCP together)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"turnserver exited with {process.returncode}: {process.stderr.read().decode()} {text}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"turnserver did not listen on port {port} within {START_TIMEOUT:g} s")
