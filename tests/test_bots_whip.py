"""WHIP and WHEP bots against the real server's endpoints: media flows publisher -> player, errors are data."""

from __future__ import annotations

import asyncio
import sys

import pytest

from sfuctl.bots.config import BotsConfig
from sfuctl.bots.runner import run_bots
from sfuctl.media import MediaSpec, make_media
from sfuctl.server.app import HTTP_SESSIONS_KEY, start_server
from sfuctl.server.config import ServerConfig

from .child_process import finish

UNAUTHORIZED = (
    "publishing (WHIP): http://127.0.0.1:{port}/whip/room-1 answered 401 Unauthorized: "
    "unauthorized: this server needs 'Authorization: Bearer <token>' (its --whip-token)"
)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ...]:
    files = make_media(MediaSpec(width=320, height=180, video_bitrate=300_000, duration=2.0), tmp_path_factory.mktemp("whip"))
    return (str(files.video), str(files.audio))


@pytest.mark.alone  # no freeze, jitter, RTT or time to first frame of a clean call on a busy CPU
async def test_a_whep_bot_plays_what_a_whip_bot_publishes_and_both_resources_are_deleted(server, media) -> None:
    base = f"http://127.0.0.1:{server.port}"
    publishing = asyncio.create_task(
        run_bots(BotsConfig(url=f"{base}/whip/stage", mode="whip", duration=4.0, media=media, seed=1))
    )
    # the WHEP endpoint matches m-lines to the producers already in the room
    for _ in range(100):
        if "stage" in server.worker.routers and len(server.worker.routers["stage"].producers) == 2:
            break
        await asyncio.sleep(0.05)
    played = await run_bots(BotsConfig(url=f"{base}/whep/stage", mode="whep", duration=2.0, media=media, seed=2))
    published = await publishing

    (publisher,) = published.bots
    (player,) = played.bots
    assert publisher["status"] == "left" and publisher["error"] is None and publisher["room"] == "stage"
    assert publisher["consumers"] == [] and sorted(s["kind"] for s in publisher["sent"]) == ["audio", "video"]
    assert all(s["packets"] > 50 for s in publisher["sent"])
    assert player["status"] == "left" and player["error"] is None and player["errors"] == [] and player["sent"] == []
    consumers = {c["kind"]: c for c in player["consumers"]}
    assert sorted(consumers) == ["audio", "video"]
    sent = {s["kind"]: s for s in publisher["sent"]}
    for kind, consumer in consumers.items():
        assert consumer["packets"] > 0.3 * sent[kind]["packets"]
        assert consumer["packets_lost"] == 0 and consumer["expected"] == consumer["packets"]
        assert consumer["producer_peer"] == ""
    assert consumers["video"]["keyframes"] >= 1 and consumers["video"]["freezes"] == 0
    assert played.total["streams_received"] == 2 and played.total["packets_received"] == consumers["video"]["packets"] + consumers["audio"]["packets"]
    assert server.runner.app[HTTP_SESSIONS_KEY].resources == {}  # each bot DELETEd its resource when it left


@pytest.mark.parametrize(
    ("token", "expected"),
    [("wrong", UNAUTHORIZED), (None, UNAUTHORIZED)],
)
async def test_a_wrong_or_missing_token_is_a_join_failure_naming_401(media, token, expected) -> None:
    running = await start_server(ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0), whip_token="secret"))
    try:
        url = f"http://127.0.0.1:{running.port}/whip/room-1"
        report = await run_bots(BotsConfig(url=url, mode="whip", duration=0.5, media=media, token=token))
    finally:
        await running.close()
    (bot,) = report.bots
    assert bot["status"] == "failed" and not bot["joined"]
    assert bot["error"] == expected.format(port=running.port)
    assert report.failed == 1
    assert report.config["token"] == ("***" if token else None)


async def test_the_right_token_publishes(media) -> None:
    running = await start_server(ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0), whip_token="secret"))
    try:
        url = f"http://127.0.0.1:{running.port}/whip/room-1"
        report = await run_bots(BotsConfig(url=url, mode="whip", duration=1.0, media=media, token="secret"))
    finally:
        await running.close()
    (bot,) = report.bots
    assert bot["status"] == "left" and all(s["packets"] > 0 for s in bot["sent"])


async def test_an_unreachable_endpoint_is_the_bots_join_error(media, unused_tcp_port) -> None:
    url = f"http://127.0.0.1:{unused_tcp_port}/whep/room-1"
    report = await run_bots(BotsConfig(url=url, mode="whep", duration=0.5, media=media, connect_timeout=2.0))
    (bot,) = report.bots
    assert bot["status"] == "failed"
    assert bot["error"].startswith(f"playing (WHEP): cannot reach {url} (")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"url": "ws://127.0.0.1:8080", "mode": "whip"}, "WHIP url must start with http:// or https://, not 'ws://127.0.0.1:8080'"),
        ({"url": "http://127.0.0.1:8080/whep/a", "mode": "websocket"}, "url must start with ws:// or wss://, not 'http://127.0.0.1:8080/whep/a'"),
        ({"url": "http://127.0.0.1/x", "mode": "rtmp"}, "mode must be one of websocket, whip, whep, not 'rtmp'"),
    ],
)
def test_config_checks_the_url_against_the_mode(values: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        BotsConfig(**values)
    assert str(error.value) == message


async def test_the_command_reports_a_401_as_a_failed_bot_and_refuses_both_modes(media) -> None:
    running = await start_server(ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0), whip_token="secret"))
    command = [sys.executable, "-c", "from sfuctl.commands.bots import bots; bots()"]
    url = f"http://127.0.0.1:{running.port}/whep/room-1"
    media_options = ["--media", media[0], "--media", media[1]]
    try:
        failed = await asyncio.create_subprocess_exec(
            *command, "--whep", url, "--token", "wrong", "--count", "1", "--duration", "0.5", "--processes", "1",
            *media_options, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        _, failed_err = await finish(failed, 20)
    finally:
        await running.close()
    both = await asyncio.create_subprocess_exec(
        *command, "--whip", url, "--whep", url, *media_options,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, both_err = await finish(both, 20)

    assert failed.returncode == 1
    assert f"bot-1 (room-1) failed: playing (WHEP): {url} answered 401 Unauthorized" in failed_err.decode()
    assert both.returncode == 2
    assert "error: give --whip or --whep, not both" in both_err.decode()
