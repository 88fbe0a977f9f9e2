"""`sfuctl serve --workers 2`: rooms spread over worker processes behind one public port."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess

import aiohttp
import pytest

from sfuctl.client.signaling import SignalingClient
from sfuctl.media import MediaSpec, make_media

from .peers import AiortcPeer
from .serve_process import start_serve
from .test_forwarding import wait_for


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory):
    return make_media(MediaSpec(width=320, height=180, video_bitrate=300_000, duration=4.0), tmp_path_factory.mktemp("media"))


@pytest.fixture
async def two_workers():
    process, line = await start_serve("--port", "0", "--rtc-port-range", "0", "--workers", "2", "--consent-timeout", "5")
    try:
        match = re.search(r"signaling (ws://\S+) · media udp \S+:(\d+),(\d+)", line)
        assert match, line
        yield match.group(1), (int(match.group(2)), int(match.group(3))), process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(20)


async def test_rooms_spread_over_workers_and_media_flows_through_each(two_workers, media):
    url, media_ports, process = two_workers
    assert media_ports[0] != media_ports[1]
    peers = [AiortcPeer(url, room, name) for room, name in (("a", "pub-a"), ("a", "sub-a"), ("b", "pub-b"), ("b", "sub-b"))]
    watcher = await SignalingClient.connect(url)
    try:
        for publisher, subscriber in (peers[0:2], peers[2:4]):
            await publisher.join()
            producers = await publisher.publish(str(media.video))
            await subscriber.join()
            await subscriber.subscribe(producers)
        for subscriber in (peers[1], peers[3]):
            assert await wait_for(lambda: subscriber.video() and subscriber.video()[0].frames >= 20, 15)
        snapshot = await watcher.request("getStats")
        assert sorted(room["name"] for room in snapshot["rooms"]) == ["a", "b"]
        assert sorted(w["rooms"] for w in snapshot["server"]["workers"]) == [1, 1]
        assert snapshot["server"]["peers"] == 4
        async with aiohttp.ClientSession() as http:
            async with http.get(url.replace("ws://", "http://") + "/metrics") as response:
                text = await response.text()
        assert re.search(r'worker="0"', text) and re.search(r'worker="1"', text)
    finally:
        for peer in peers:
            await peer.close()
        await watcher.close()


async def test_sigterm_stops_the_front_and_every_worker(two_workers):
    url, _, process = two_workers
    client = await SignalingClient.connect(url)
    await client.request("join", room="x", name="idle")
    children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) == 2
    process.send_signal(signal.SIGTERM)
    assert await asyncio.get_running_loop().run_in_executor(None, process.wait, 20) == 0
    assert await wait_for(lambda: client.closed.is_set(), 5)
    await client.close()
    assert not [pid for pid in children if os.path.exists(f"/proc/{pid}")]


async def test_relay_reaches_peers_of_a_room_on_any_worker(two_workers, media):
    """The front passes relay frames to the room's worker: a mesh call works in rooms on either worker."""
    from sfuctl.bots.config import BotsConfig
    from sfuctl.bots.runner import run_bots

    url, _, _ = two_workers
    config = BotsConfig(url=url, count=4, rooms=2, mesh=True, ramp=20, duration=3.0, audio=False,
                        media=(str(media.video),), seed=21)
    report = await run_bots(config)
    assert report.failed == 0
    for bot in report.bots:
        assert bot["transports"] == 1 and bot["errors"] == []
        (video,) = bot["consumers"]
        assert video["packets"] > 30 and video["packets_lost"] == 0
