"""Load agents through a real redis-server: two `sfuctl agent` processes and a controller (`sfuctl run
--agents`) on this machine, against a real server; a killed agent, another version, Redis down."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sfuctl.agents.link import agent_key, connect, inbox_key, redis_clock, run_key, sign
from sfuctl.server.app import RunningServer, start_server
from sfuctl.server.config import ServerConfig

from .child_process import finish
from .redis_server import free_port
from .scenario_files import RUN, small_media

AGENT = [sys.executable, "-c", "from sfuctl.commands.agent import agent; agent()"]
SECRET = "test-secret"
ENV = {**os.environ, "SFUCTL_AGENTS_SECRET": SECRET}
MEETING = """name = "meeting-like"
duration = "{duration}"
[bots]
count = 6
rooms = 2
ramp = 10
seed = 5
media = ["{video}", "{audio}"]
[thresholds]
"bots.join_failed" = ["count == 0"]
"consumer.bitrate_bps{{kind=video}}" = ["count == 12", "p50 > {bitrate}"]
"consumer.fraction_lost" = {{ expect = ["p95 < 0.05"], abort_on_fail = true }}
"""


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    return small_media(tmp_path_factory.mktemp("media"))


def meeting(directory: Path, media: tuple[str, str], duration: str = "6s", bitrate: str = "100_000") -> Path:
    """6 bots in 2 rooms of 3, all publishing audio + video: 24 consumers, 12 of them video."""
    path = directory / f"meeting-{bitrate}.toml"
    path.write_text(MEETING.format(duration=duration, video=media[0], audio=media[1], bitrate=bitrate))
    return path


class Agents:
    """`sfuctl agent` processes on one Redis, stopped (or killed) after the test."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.output: dict[str, list[str]] = {}
        self.readers: list[asyncio.Task] = []

    async def start(self, name: str) -> None:
        process = await asyncio.create_subprocess_exec(
            *AGENT, "--redis", self.redis_url, "--name", name, "--processes", "1", env=ENV,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        self.processes[name] = process
        self.output[name] = []
        self.readers.append(asyncio.create_task(self._read(name)))
        await self.wait_for(name, "waiting for work")

    async def wait_for(self, name: str, text: str, timeout: float = 30.0) -> None:
        """Until the agent printed a line with `text`."""
        async with asyncio.timeout(timeout):
            while not any(text in line for line in self.output[name]):
                assert self.processes[name].returncode is None, f"agent {name} exited: {self.output[name]}"
                await asyncio.sleep(0.1)

    async def _read(self, name: str) -> None:
        stdout = self.processes[name].stdout
        while line := await stdout.readline():
            self.output[name].append(line.decode())

    async def close(self) -> None:
        for process in self.processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGINT)
        for process in self.processes.values():
            assert await asyncio.wait_for(process.wait(), 30) in (0, -signal.SIGKILL)
        await asyncio.gather(*self.readers)


@pytest.fixture
async def agents(redis_url: str) -> AsyncIterator[Agents]:
    running = Agents(redis_url)
    yield running
    await running.close()


async def controller(*args: str, timeout: float = 90) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(*RUN, *args, env=ENV, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    out, err = await finish(process, timeout)
    return process.returncode, out.decode(), err.decode()


async def test_two_agents_run_one_scenario_with_one_verdict_on_merged_samples(
    server: RunningServer, agents: Agents, tmp_path: Path, media: tuple[str, str]
) -> None:
    await agents.start("a1")
    await agents.start("a2")
    out = tmp_path / "run.json"
    code, stdout, stderr = await controller(str(meeting(tmp_path, media)), "--url", server.url, "--agents",
                                            agents.redis_url, "--json", str(out), "-q")
    assert code == 0, stdout + stderr
    result = json.loads(out.read_text())
    bots = result["bots"]["bots"]
    assert all(bot["status"] == "left" for bot in bots) and len(bots) == 6
    by_agent = {name: [bot for bot in bots if bot["agent"] == name] for name in ("a1", "a2")}
    assert {a["name"]: (a["bots"], a["joined"]) for a in result["agents"]["agents"]} == {
        name: (len(mine), len(mine)) for name, mine in by_agent.items()}
    assert all(by_agent.values()), "each agent ran a share of the bots"
    # the merged counts are exactly what the agents' own records say
    consumers = [c for bot in bots for c in bot["consumers"]]
    assert result["metrics"]["consumer.bitrate_bps"]["count"] == len(consumers) == 24
    assert result["metrics"]["bots.join_ms"]["count"] == 6
    assert sorted(c["consumer_id"] for c in result["consumers"]) == sorted(c["consumer_id"] for c in consumers)
    video = {v["metric"] + v["expression"]: v for v in result["verdicts"]}
    assert video["consumer.bitrate_bps{kind=video}count == 12"]["value"] == 12
    assert result["agents"]["start_skew_ms"] is not None

    code, stdout, stderr = await controller(str(meeting(tmp_path, media, bitrate="1e9")), "--url", server.url,
                                            "--agents", agents.redis_url, "-q")
    assert code == 99, stdout + stderr
    assert "p50 > 1e9" in stdout and "FAIL: 1 of 4 thresholds failed" in stdout


async def test_an_agent_killed_mid_run_fails_the_run_naming_it_and_the_other_agents_bots_leave(
    server: RunningServer, agents: Agents, tmp_path: Path, media: tuple[str, str]
) -> None:
    await agents.start("a1")
    await agents.start("a2")
    out = tmp_path / "run.json"
    run = asyncio.create_task(controller(str(meeting(tmp_path, media, duration="60s")), "--url", server.url,
                                         "--agents", agents.redis_url, "--json", str(out), "-q"))
    await agents.wait_for("a2", "bots against")
    await asyncio.sleep(3)  # the bots are joined and sending
    agents.processes["a2"].kill()
    code, stdout, stderr = await run
    assert code == 1, stdout + stderr
    assert "error: agent a2 vanished" in stderr  # a failed run prints only its error
    result = json.loads(out.read_text())
    bots = result["bots"]["bots"]
    assert {bot["status"] for bot in bots if bot["agent"] == "a1"} == {"left"}
    lost = [bot for bot in bots if bot["agent"] == "a2"]
    assert lost and all(bot["status"] in ("failed", "disconnected") for bot in lost)
    assert all("agent a2 vanished" in (bot["error"] or bot["errors"][0]) for bot in lost)
    assert any("done (" in line for line in agents.output["a1"])


async def test_an_agent_refuses_another_versions_plan_and_the_controller_refuses_such_agents(
    server: RunningServer, agents: Agents, tmp_path: Path, media: tuple[str, str]
) -> None:
    await agents.start("a1")
    client = await connect(agents.redis_url)
    try:
        offset, _ = await redis_clock(client)
        body = {"kind": "plan", "run": "r1", "version": "0.0.1", "issued": time.time() + offset, "config": {},
                "plans": [], "measure": None}
        await client.xadd(inbox_key("a1"), sign(body, SECRET))
        answer = await client.xread({run_key("r1"): "0-0"}, block=10_000)
        (_, [(_, fields)]), = answer
        assert fields["type"] == "refused"
        assert json.loads(fields["data"])["reason"] == (
            "agent a1 runs sfuctl 0.1.0 and the plan is for sfuctl 0.0.1: install the same version on every machine")
        await client.hset(agent_key("old"), mapping={"name": "old", "cores": 1, "version": "0.0.1"})
    finally:
        await client.aclose()
    code, stdout, stderr = await controller(str(meeting(tmp_path, media)), "--url", server.url,
                                            "--agents", agents.redis_url, "-q")
    assert code == 1 and "error: agents of another version: old (sfuctl 0.0.1)" in stderr, stdout + stderr
    code, stdout, stderr = await controller(str(meeting(tmp_path, media)), "--agents", agents.redis_url, "-q")
    assert code == 1 and "the embedded server runs on this machine only" in stderr, stdout + stderr


async def test_redis_down_at_start_is_one_line_and_exit_1(tmp_path: Path, media: tuple[str, str]) -> None:
    down = f"redis://127.0.0.1:{free_port()}"
    code, stdout, stderr = await controller(str(meeting(tmp_path, media)), "--url", "ws://127.0.0.1:9",
                                            "--agents", down)
    assert code == 1 and stderr.count("\n") == 1, stdout + stderr
    assert stderr.startswith(f"error: cannot reach Redis at {down} (") and "is redis-server running" in stderr
    process = await asyncio.create_subprocess_exec(*AGENT, "--redis", down, env=ENV, stderr=asyncio.subprocess.PIPE)
    _, err = await process.communicate()
    assert process.returncode == 1 and err.decode().startswith(f"error: cannot reach Redis at {down}")


async def test_agents_run_bots_on_a_server_with_access_tokens_without_ever_getting_its_secret(
    agents: Agents, tmp_path: Path, media: tuple[str, str]
) -> None:
    auth_secret = "server-secret-" + "a" * 32
    server = await start_server(ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0), auth_secret=auth_secret))
    try:
        await agents.start("a1")
        path = meeting(tmp_path, media)
        path.write_text(path.read_text().replace("[bots]", f'[server]\nauth_secret = "{auth_secret}"\n\n[bots]'))
        out = tmp_path / "run.json"
        code, stdout, stderr = await controller(str(path), "--url", server.url, "--agents", agents.redis_url,
                                                "--json", str(out), "-q")
        # The agent's plan has no secret (config.auth_secret is null there): each bot joins with its plan's token.
        assert code == 0, stdout + stderr
        bots = json.loads(out.read_text())["bots"]["bots"]
        assert [bot["status"] for bot in bots] == ["left"] * 6
        assert len({bot["peer_id"] for bot in bots}) == 6
        assert auth_secret not in out.read_text() and auth_secret not in "".join(agents.output["a1"])
    finally:
        await server.close()
