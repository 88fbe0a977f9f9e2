"""`sfuctl bots` as a user runs it: a subprocess against the in-process server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from sfuctl.media import MediaSpec, make_media

from .child_process import finish

# The lead registers the command in sfuctl.cli; calling it directly keeps these tests independent of that.
COMMAND = [sys.executable, "-c", "from sfuctl.commands.bots import bots; bots()"]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    files = make_media(MediaSpec(width=320, height=180, video_bitrate=250_000, duration=2.0), tmp_path_factory.mktemp("m"))
    return ["--media", str(files.video), "--media", str(files.audio)]


async def start(*args: str, env: dict | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *COMMAND, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )


async def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


async def test_sigterm_makes_every_bot_leave_and_still_writes_the_report(server, media, tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    process = await start("--url", server.url, "--count", "2", "--processes", "2", "--ramp", "20",
                          "--json", str(report_path), *media)
    # 2 bots x (send + receive transport), all connected
    assert await wait_until(
        lambda: sum(t.connected for t in server.worker.transports) == 4, 15
    ), "the bots did not connect"
    await asyncio.sleep(1.0)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = await finish(process, 30)

    assert process.returncode == 0, stderr.decode()
    report = json.loads(report_path.read_text())
    assert report["schema"] == "sfuctl.bots.report/1" and report["stopped_by"] == "stop"
    assert [bot["status"] for bot in report["bots"]] == ["left", "left"]
    assert all(c["packets"] > 0 for bot in report["bots"] for c in bot["consumers"])
    assert report["summary"]["total"]["streams_received"] == 4
    assert "total" in stdout.decode()  # the summary table
    assert await wait_until(lambda: not server.worker.transports, 5), "the bots did not leave the server"


async def test_a_wrong_url_is_one_line_and_exit_code_2() -> None:
    with socket.socket() as taken:  # bound, never listening: refused, and no other test's server can take it
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        process = await start("--url", f"ws://127.0.0.1:{port}", "--count", "1")
        stdout, stderr = await finish(process, 20)

    assert process.returncode == 2
    assert stdout == b""
    assert stderr.decode().splitlines() == [f"error: cannot reach ws://127.0.0.1:{port} (is `sfuctl serve` running?)"]


async def test_a_bot_that_fails_to_join_gives_exit_code_1_and_default_media_is_made_once(server, tmp_path: Path) -> None:
    env = {**os.environ, "SFUCTL_CACHE_DIR": str(tmp_path / "cache")}
    process = await start("--url", server.url, "--count", "1", "--loss", "1", "--join-timeout", "2",
                          "--duration", "3", "--processes", "1", env=env)
    stdout, stderr = await finish(process, 40)

    assert process.returncode == 1, stderr.decode()
    assert "bot-1 (room-1) failed: send transport failed: ICE/DTLS did not complete" in stderr.decode()
    assert "Traceback" not in stderr.decode()
    made = sorted(p.suffix for p in (tmp_path / "cache").iterdir())
    assert made == [".ivf", ".ogg"]
