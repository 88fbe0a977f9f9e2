"""Shared fixtures: every test stays on 127.0.0.1, with a real server where one is needed."""

from __future__ import annotations

import aioice.ice
import pytest

from sfuctl.server.app import RunningServer, start_server
from sfuctl.server.config import ServerConfig


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiortc peers in tests gather only 127.0.0.1 (aioice skips loopback and gathers every other interface)."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4=True, use_ipv6=False: ["127.0.0.1"])


@pytest.fixture
async def server() -> RunningServer:
    """A real sfuctl server on free loopback ports, closed after the test."""
    running = await start_server(ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0), consent_timeout=5.0))
    yield running
    await running.close()


@pytest.fixture
def redis_url() -> str:
    """A real redis-server of its own on a free loopback port (tests/redis_server.py), stopped after the test."""
    from .redis_server import redis_server

    with redis_server() as url:
        yield url
