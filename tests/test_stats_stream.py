"""The stats stream and snapshot over the signaling websocket, and `sfuctl stats` against real servers."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from io import StringIO

import pytest
from click.testing import CliRunner
from rich.console import Console
from rich.live import Live
from websockets.sync.client import connect as sync_connect

from sfuctl.client.signaling import SignalingClient, SignalingError
from sfuctl.client.stats import watch
from sfuctl.commands.stats import LiveView, stats
from sfuctl.stats_schema import validate_snapshot


async def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return predicate()


async def next_stats(client: SignalingClient, timeout: float = 5.0) -> dict:
    method, params = await asyncio.wait_for(client.notifications.get(), timeout)
    assert method == "stats"
    return params


async def test_get_stats_without_joining_returns_a_valid_empty_snapshot(server):
    client = await SignalingClient.connect(server.url)
    try:
        snapshot = await client.request("getStats")
    finally:
        await client.close()
    validate_snapshot(snapshot)
    assert snapshot["rooms"] == []
    assert {k: snapshot["server"][k] for k in ("rooms", "peers", "producers", "consumers")} == dict.fromkeys(
        ("rooms", "peers", "producers", "consumers"), 0
    )
    assert snapshot["server"]["rtc_port"] == server.worker.rtc_port


async def test_a_stats_only_client_gets_pushes_until_it_unsubscribes(server):
    watcher = await SignalingClient.connect(server.url)
    member = await SignalingClient.connect(server.url)
    try:
        assert await watcher.request("subscribeStats", interval=0.1) == {"interval": 0.1}
        first = await next_stats(watcher)
        assert first["rooms"] == []
        joined = await member.request("join", room="lobby", name="ann")
        later = await next_stats(watcher)
        while not later["rooms"]:
            later = await next_stats(watcher)
        validate_snapshot(later)
        assert later["time"] > first["time"]
        assert [p["id"] for p in later["rooms"][0]["peers"]] == [joined["peerId"]]
        assert await watcher.request("unsubscribeStats") == {}
        # Responses and notifications keep their order: anything pushed before the unsubscribe was already read.
        while not watcher.notifications.empty():
            watcher.notifications.get_nowait()
        await asyncio.sleep(0.5)
        assert watcher.notifications.empty()
    finally:
        await watcher.close()
        await member.close()


async def test_subscribing_again_replaces_the_interval_and_the_room(server):
    watcher = await SignalingClient.connect(server.url)
    members = [await SignalingClient.connect(server.url) for _ in range(2)]
    try:
        await members[0].request("join", room="a", name="ann")
        await members[1].request("join", room="b", name="bo")
        await watcher.request("subscribeStats", interval=60)
        assert {r["name"] for r in (await next_stats(watcher))["rooms"]} == {"a", "b"}
        await watcher.request("subscribeStats", interval=0.1, room="b")
        for _ in range(3):
            snapshot = await next_stats(watcher)
            assert [r["name"] for r in snapshot["rooms"]] == ["b"]
            assert snapshot["server"]["rooms"] == 2  # totals stay whole
            assert snapshot["server"]["peers"] == 2
    finally:
        for client in (watcher, *members):
            await client.close()


async def test_get_stats_keeps_one_room_when_asked(server):
    client = await SignalingClient.connect(server.url)
    other = await SignalingClient.connect(server.url)
    try:
        await client.request("join", room="a", name="ann")
        await other.request("join", room="b", name="bo")
        assert [r["name"] for r in (await client.request("getStats", room="b"))["rooms"]] == ["b"]
        assert (await client.request("getStats", room="nope"))["rooms"] == []
        assert sorted(r["name"] for r in (await client.request("getStats"))["rooms"]) == ["a", "b"]
    finally:
        await client.close()
        await other.close()


@pytest.mark.parametrize(
    "method, params, message",
    [
        ("subscribeStats", {"interval": 0}, "'interval' must be a number of seconds from 0.1 to 60.0"),
        ("subscribeStats", {"interval": 61}, "'interval' must be a number of seconds from 0.1 to 60.0"),
        ("subscribeStats", {"interval": "1"}, "'interval' must be a number of seconds from 0.1 to 60.0"),
        ("subscribeStats", {"interval": True}, "'interval' must be a number of seconds from 0.1 to 60.0"),
        ("subscribeStats", {"interval": None}, "'interval' must be a number of seconds from 0.1 to 60.0"),
        ("subscribeStats", {"room": 5}, "'room' must be a room name (string) or absent for every room"),
        ("getStats", {"room": ["a"]}, "'room' must be a room name (string) or absent for every room"),
    ],
)
async def test_bad_stats_requests_get_bad_request(server, method, params, message):
    client = await SignalingClient.connect(server.url)
    try:
        with pytest.raises(SignalingError) as error:
            await client.request(method, **params)
        assert (error.value.code, error.value.message) == ("bad_request", message)
        await asyncio.sleep(0.2)
        assert client.notifications.empty()  # a refused subscription pushes nothing
    finally:
        await client.close()


def test_live_view_shows_a_banner_while_disconnected_and_drops_it_on_the_next_snapshot():
    file = StringIO()
    console = Console(file=file, width=80, force_terminal=True, color_system=None)
    snapshot = {"version": 1, "time": 1700000000.0, "rooms": [{"name": "lobby", "peers": [], "producers": [], "consumers": []}],
                "server": {"uptime_s": 5, "rooms": 1, "peers": 0, "producers": 0, "consumers": 0, "transports": 0,
                           "bitrate_in_bps": 0, "bitrate_out_bps": 0, "cpu_percent": 1.0, "rtc_port": 1, "unknown_datagrams": 0}}  # fmt: skip
    with Live(console=console, auto_refresh=False) as live:
        view = LiveView(live, "ws://127.0.0.1:9", None, "worst")
        view.on_disconnected("connection refused")
        assert "reconnecting to ws://127.0.0.1:9: connection refused" in file.getvalue()
        file.seek(0)
        file.truncate()
        view.on_snapshot(snapshot)
        assert "room lobby" in file.getvalue()
        assert "reconnecting" not in file.getvalue()


# -- the command against a server process ---------------------------------------------------------------------
def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`sfuctl serve` in a child process on a fixed free port, so that it can crash and come back."""

    def __init__(self, workers: int = 1) -> None:
        self.port = free_port(socket.SOCK_STREAM)
        self.workers = workers
        self.url = f"ws://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "sfuctl.cli", "serve", "--port", str(self.port), "--rtc-port-range", "0",
                   "--workers", str(self.workers), "--log-level", "warning"]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                assert self.process.poll() is None, self.process.stderr.read().decode()
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture(params=[1, 2], ids=["one-worker", "two-workers"])
def server_process(request):
    server = ServerProcess(request.param)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def test_once_json_prints_one_valid_snapshot_of_a_server_process(server_process):
    url = server_process.url
    with sync_connect(url) as ws:
        ws.send(json.dumps({"id": 1, "method": "join", "params": {"room": "cli", "name": "ann"}}))
        peer_id = json.loads(ws.recv())["result"]["peerId"]
        result = CliRunner().invoke(stats, ["--once", "--json", "--url", url])
        rendered = CliRunner().invoke(stats, ["--once", "--url", url])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("\n") == 1
    snapshot = json.loads(result.stdout)
    validate_snapshot(snapshot)
    assert [p["id"] for room in snapshot["rooms"] for p in room["peers"]] == [peer_id]
    assert rendered.exit_code == 0, rendered.stderr
    assert "room cli" in rendered.stdout and "no consumers" in rendered.stdout


@pytest.mark.parametrize("args", [["--once", "--json"], ["--once"]])
def test_an_unreachable_server_is_one_line_and_exit_status_2(args):
    url = f"ws://127.0.0.1:{free_port(socket.SOCK_STREAM)}"
    result = CliRunner().invoke(stats, [*args, "--url", url])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: cannot reach the sfuctl server at {url}: ")
    assert result.stderr.count("\n") == 1


def test_help_shows_an_example():
    result = CliRunner().invoke(stats, ["--help"])
    assert result.exit_code == 0
    assert "sfuctl stats --once --json" in result.stdout


async def test_watch_reports_a_crashed_server_and_recovers_when_it_comes_back():
    server_process = ServerProcess(workers=1)  # one process: SIGKILL takes the whole server down
    await asyncio.to_thread(server_process.start)
    events: list[tuple[str, object]] = []
    task = asyncio.create_task(
        watch(server_process.url, 0.1, None, lambda s: events.append(("snapshot", s)), lambda r: events.append(("down", r)))
    )
    try:
        assert await wait_for(lambda: any(kind == "snapshot" for kind, _ in events))
        server_process.kill()
        assert await wait_for(lambda: events[-1][0] == "down")
        outage = len(events)
        await asyncio.to_thread(server_process.start)
        assert await wait_for(lambda: events[-1][0] == "snapshot" and len(events) > outage)
        validate_snapshot(events[-1][1])
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        server_process.kill()
