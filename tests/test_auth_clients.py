"""The clients of a server with access tokens: `sfuctl token create`, bots that mint their own tokens (websocket
and WHIP), `sfuctl stats --token` and a scenario with `server.auth_secret`, all against real servers."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from asyncio.subprocess import PIPE
from pathlib import Path

import pytest

from sfuctl.bots.config import BotsConfig
from sfuctl.bots.runner import run_bots
from sfuctl.client.signaling import SignalingClient
from sfuctl.client.stats import EXIT_REFUSED, StatsFailure, fetch_snapshot
from sfuctl.server.app import RunningServer, start_server
from sfuctl.server.config import ServerConfig
from sfuctl.tokens import url_with_token

from .child_process import finish
from .scenario_files import RUN, small_media

SECRET = "client-secret-" + "z" * 32
SFUCTL = [sys.executable, "-c", "from sfuctl.cli import main; main()"]
SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    return small_media(tmp_path_factory.mktemp("auth-media"))


@pytest.fixture
async def server() -> RunningServer:
    running = await start_server(ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0), consent_timeout=5.0, auth_secret=SECRET))
    yield running
    await running.close()


def token_create(*args: str, secret: str | None = SECRET) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", **({"SFUCTL_AUTH_SECRET": secret} if secret else {})}
    return subprocess.run([*SFUCTL, "token", "create", *args], capture_output=True, text=True, timeout=30, env=env)


async def test_token_create_mints_what_the_server_accepts_and_bad_options_are_one_line(server) -> None:
    done = token_create("--room", "demo", "--identity", "alice", "--ttl", "10m", "--publish", "audio", "--json")
    assert done.returncode == 0, done.stderr
    minted = json.loads(done.stdout)
    assert minted["claims"]["grants"] == {"publish": ["audio"], "subscribe": True, "data": True, "admin": False}
    assert minted["claims"]["exp"] - minted["claims"]["iat"] == 600
    client = await SignalingClient.connect(url_with_token(server.url, minted["token"]))
    try:
        assert (await client.request("join", room="demo"))["peerId"] == "alice"
    finally:
        await client.close()

    for args, secret, fragment in [
        (("--room", "demo", "--identity", "a"), None, "no secret"),
        (("--room", "demo", "--identity", "a"), "short", "at least 32"),
        (("--room", "demo"), SECRET, "needs an identity"),
        (("--room", "demo", "--identity", "a", "--publish", "screen"), SECRET, "'screen'"),
        (("--room", "demo", "--identity", "a", "--ttl", "5"), SECRET, "--ttl"),
    ]:
        done = token_create(*args, secret=secret)
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("sfuctl token create: ") and fragment in done.stderr


async def test_bots_mint_a_token_each_and_exchange_media(server, media) -> None:
    report = await run_bots(BotsConfig(url=server.url, count=2, duration=3.0, media=media, processes=1, seed=4, auth_secret=SECRET))
    assert [b["status"] for b in report.bots] == ["left", "left"], [b["error"] for b in report.bots]
    assert all(len(b["consumers"]) == 2 and all(c["packets"] > 0 for c in b["consumers"]) for b in report.bots)
    assert len({b["peer_id"] for b in report.bots}) == 2  # an identity each: neither replaced the other
    assert report.config["auth_secret"] == "***" and SECRET not in json.dumps(report.to_dict())


async def test_bots_with_a_wrong_secret_fail_with_one_clear_line_each(server, media) -> None:
    report = await run_bots(
        BotsConfig(url=server.url, count=2, duration=1.0, media=media, processes=1, auth_secret="wrong-secret-" + "w" * 32)
    )
    assert report.failed == 2
    for bot in report.bots:
        assert bot["error"] == (
            "joining: server said unauthorized: the token's signature does not verify (wrong secret or key, or a forged token)"
        )
    assert not server.worker.routers


async def test_whip_and_whep_bots_mint_bearer_tokens(server, media) -> None:
    base = f"http://127.0.0.1:{server.port}"
    published = await run_bots(BotsConfig(url=f"{base}/whip/stage", mode="whip", duration=2.0, media=media, auth_secret=SECRET))
    (bot,) = published.bots
    assert bot["status"] == "left" and bot["error"] is None and all(s["packets"] > 0 for s in bot["sent"])
    assert not server.worker.routers  # its DELETE (with its own token) ended the session


async def test_stats_needs_an_admin_token(server) -> None:
    with pytest.raises(StatsFailure) as caught:
        await fetch_snapshot(server.url)
    assert caught.value.status == EXIT_REFUSED and "unauthorized" in str(caught.value)
    admin = token_create("--admin", "--ttl", "1m").stdout.strip()
    snapshot = await fetch_snapshot(server.url, token=admin)
    assert snapshot["version"] == 1
    member = token_create("--room", "r", "--identity", "a").stdout.strip()
    process = await asyncio.create_subprocess_exec(
        *SFUCTL, "stats", "--url", server.url, "--once", "--json", "--token", member, stdout=PIPE, stderr=PIPE
    )
    stdout, stderr = await finish(process, 30)
    assert process.returncode == EXIT_REFUSED and stdout == b"", stderr
    assert stderr.decode().count("\n") == 1 and "forbidden" in stderr.decode() and "--token" in stderr.decode()
    assert member not in stderr.decode()


def test_the_smoke_scenario_passes_with_auth_on(tmp_path: Path, media: tuple[str, str]) -> None:
    text = (SCENARIOS / "smoke.toml").read_text()
    text = text.replace('duration = "15s"', 'duration = "6s"')
    text = text.replace("[bots]\n", f'[server]\nauth_secret = "{SECRET}"\n\n[bots]\nmedia = ["{media[0]}", "{media[1]}"]\nprocesses = 1\n')
    text += '"server.consumers" = ["max == 12"]   # the runner\'s admin token reads the server\'s stats\n'
    path = tmp_path / "smoke-auth.toml"
    path.write_text(text)
    done = subprocess.run([*RUN, str(path), "--quiet", "--json", str(tmp_path / "out.json")], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["passed"] and SECRET not in (tmp_path / "out.json").read_text()
