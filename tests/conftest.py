"""Shared fixtures: every test stays on 127.0.0.1, with a real server where one is needed."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aioice.ice
import pytest

from sfuctl.server.app import RunningServer, start_server
from sfuctl.server.config import ServerConfig


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "alone: runs while no other test runs (scripts/test runs tests in parallel): it needs an idle CPU"
    )


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: without it, tests run in this one process
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """Workers for `-n auto` (scripts/test): one per CPU and one more, as most tests wait on the network and the clock
    rather than compute; none (this process runs the tests) when every test asked for is in one file."""
    files = {str(arg).split("::")[0] for arg in config.args}
    if len(files) == 1 and Path(files.pop()).is_file():
        return 0
    return (os.cpu_count() or 1) + 1


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that starts Chromium runs alone: Chromium encodes and decodes video in real time, and beside other
    tests on 2 cores it drops frames and simulcast layers that the test waits for (and tests/ipv6_route.py changes
    the whole network namespace's routes for one of them). Fixtures that start one have "chromium" in their name."""
    for item in items:
        if any("chromium" in name for name in getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.alone)


@pytest.hookimpl(wrapper=True, tryfirst=True)  # outside pytest-timeout's timer: waiting is not running
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Run an `alone` test (setup to teardown) while no other test runs, the others beside each other."""
    if not hasattr(item.config, "workerinput"):  # one process: nothing runs beside this test
        return (yield)
    # pytest-xdist gives each worker a base temporary directory in one of the whole run's.
    with _turn(Path(item.config.option.basetemp).parent, alone=item.get_closest_marker("alone") is not None):
        return (yield)


@contextmanager
def _turn(directory: Path, alone: bool) -> Iterator[None]:
    """A readers-writer lock over the workers of one run: each test holds `tests.lock` shared, an `alone` test holds
    it exclusively. All first queue on `queue.lock`, so an `alone` test waiting for the running tests to end keeps
    new ones from starting meanwhile (it is not starved)."""
    with (directory / "queue.lock").open("w") as queue, (directory / "tests.lock").open("w") as tests:
        fcntl.flock(queue, fcntl.LOCK_EX)
        try:
            fcntl.flock(tests, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            fcntl.flock(queue, fcntl.LOCK_UN)
        try:
            yield
        finally:  # not left to the file's closing: a child process that inherited it would hold the lock
            fcntl.flock(tests, fcntl.LOCK_UN)


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
