"""GStreamer's webrtcbin (an independent WebRTC stack) publishing over WHIP and playing over WHEP.

webrtcbin runs in the system python3 (tests/gst_peer.py); these tests skip only when GStreamer's webrtcbin or its
Python bindings are not installed (.ci/run installs them).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sfuctl.media import MediaSpec, make_media

from .peers import AiortcPeer
from .test_forwarding import next_notification, wait_for

SYSTEM_PYTHON = "/usr/bin/python3"
GST_PEER = Path(__file__).with_name("gst_peer.py")
PROBE = (
    "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstWebRTC', '1.0'); "
    "gi.require_version('GstSdp', '1.0'); from gi.repository import Gst; Gst.init(None); "
    "assert all(Gst.ElementFactory.find(e) for e in ('webrtcbin', 'vp8enc', 'opusenc', 'nicesrc'))"
)


def unavailable_reason() -> str | None:
    try:
        probe = subprocess.run([SYSTEM_PYTHON, "-c", PROBE], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{SYSTEM_PYTHON} cannot run: {exc}"
    if probe.returncode != 0:
        return ("GStreamer webrtcbin for the system python3 is missing (Debian: python3-gst-1.0 "
                "gstreamer1.0-plugins-bad gstreamer1.0-plugins-good gstreamer1.0-nice)")
    return None


pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))


async def run_gst_peer(mode: str, url: str, policy: str, seconds: float, *options: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        SYSTEM_PYTHON, str(GST_PEER), mode, url, policy, str(seconds), *options,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def gst_report(process: asyncio.subprocess.Process, until, timeout: float) -> dict:
    """The peer's progress lines until one satisfies `until` (or reports an error or its end)."""
    async def read() -> dict:
        while True:
            line = await process.stdout.readline()
            if not line:
                raise AssertionError("the GStreamer peer ended: " + (await process.stderr.read()).decode()[-2000:])
            report = json.loads(line)
            if report["error"] is not None or report["done"] or until(report):
                return report
    return await asyncio.wait_for(read(), timeout)


async def gst_stop(process: asyncio.subprocess.Process, timeout: float = 15) -> dict:
    """Close the peer's stdin (it deletes its resource and exits) and return its last report."""
    process.stdin.close()
    report = await gst_report(process, lambda r: False, timeout)
    assert await asyncio.wait_for(process.wait(), timeout) == 0
    return report


@pytest.fixture(scope="module")
def vp8_media(tmp_path_factory: pytest.TempPathFactory):
    spec = MediaSpec(width=320, height=180, fps=25, video_bitrate=300_000, duration=4.0)
    return make_media(spec, tmp_path_factory.mktemp("vp8"))


@pytest.mark.parametrize("policy", ["max-bundle", "none"])
async def test_webrtcbin_publishes_vp8_and_opus_over_whip_and_a_peer_decodes_them(server, policy: str) -> None:
    room = f"gst-{policy}"
    watcher = AiortcPeer(server.url, room, "watcher")
    process = None
    try:
        await watcher.join()
        process = await run_gst_peer("whip", f"http://127.0.0.1:{server.port}/whip/{room}", policy, 30.0)
        # bundle-policy=none offers a transport per m-line: the server opens one for each (docs/whip.md).
        kinds = ["audio", "video"]
        added = [await next_notification(watcher.signaling, "producerAdded", timeout=30) for _ in kinds]
        producers = [a["producer"] for a in added]
        assert sorted(p["kind"] for p in producers) == kinds
        peer = next(p for p in server.worker.routers[room].peers.values() if p.name != "watcher")
        assert len(peer.send_transports) == {"max-bundle": 1, "none": 2}[policy]
        assert all(p["codec"] == {"audio": "opus", "video": "VP8"}[p["kind"]] for p in producers)
        await watcher.subscribe(producers)
        assert await wait_for(lambda: watcher.video() and watcher.video()[0].frames >= 25
                              and watcher.audio() and watcher.audio()[0].frames >= 25, 10), (
            watcher.received, json.dumps([p.stats() for p in server.worker.routers[room].producers.values()]),
            [t.stats() for t in server.worker.transports])
        assert watcher.video()[0].sizes == {(320, 180)}
        assert len(server.worker.routers[room].producers) == len(kinds)
        assert (await gst_stop(process))["error"] is None
        # webrtcbin's peer deletes its resource when done: its producers leave the room.
        assert (await next_notification(watcher.signaling, "peerLeft", timeout=10))["peerId"] == producers[0]["peerId"]
    finally:
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()
        await watcher.close()


@pytest.mark.parametrize("policy", ["max-bundle", "none"])
async def test_webrtcbin_plays_a_room_over_whep_and_decodes_it(server, vp8_media, policy: str) -> None:
    room = f"gst-play-{policy}"
    publisher = AiortcPeer(server.url, room, "alice")
    process = None
    try:
        await publisher.join()
        await publisher.publish(str(vp8_media.video), str(vp8_media.audio))
        process = await run_gst_peer("whep", f"http://127.0.0.1:{server.port}/whep/{room}", policy, 30.0)
        report = await gst_report(process, lambda r: r["video"] >= 25 and r["audio"] >= 25, 40)
        assert report["error"] is None and report["video"] >= 25 and report["audio"] >= 25, report
        player = next(p for p in server.worker.routers[room].peers.values() if p.name != "alice")
        assert len(player.recv_transports) == {"max-bundle": 1, "none": 2}[policy]
        assert (await gst_stop(process))["error"] is None
        assert [p.name for p in server.worker.routers[room].peers.values()] == ["alice"]
    finally:
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()
        await publisher.close()


async def test_webrtcbin_with_transport_cc_gives_the_announced_probe_ssrc_a_pad_and_its_feedback_covers_it(server, vp8_media) -> None:
    """A webrtcbin player that offers transport-cc gets probes: the answer lists the probe SSRC after the video
    consumer's, webrtcbin opens a pad for each answered SSRC and no other (the probes' carries no frame), decodes
    both streams, and its transport feedback covers the probes (their clusters give results)."""
    room = "gst-probes"
    publisher = AiortcPeer(server.url, room, "alice")
    process = None
    try:
        await publisher.join()
        await publisher.publish(str(vp8_media.video), str(vp8_media.audio))
        url = f"http://127.0.0.1:{server.port}/whep/{room}"
        process = await run_gst_peer("whep", url, "max-bundle", 30.0, "transport-cc")
        report = await gst_report(process, lambda r: r["video"] >= 25 and r["audio"] >= 25 and len(r["pads"]) >= 3, 40)
        assert report["error"] is None and report["video"] >= 25 and report["audio"] >= 25, report
        player = next(p for p in server.worker.routers[room].peers.values() if p.name != "alice")
        (transport,) = player.recv_transports
        consumers = {c.mid: c.ssrc for c in player.consumers.values()}
        assert report["answered"] == {"video0": [consumers["video0"], transport.probe_ssrc], "audio1": [consumers["audio1"]]}
        assert sorted(report["pads"]) == sorted([["video0", transport.probe_ssrc], *([mid, s] for mid, s in consumers.items())])
        assert await wait_for(lambda: transport.stats()["probe_results"] > 0, 15), transport.stats()
        assert (await gst_stop(process))["error"] is None
    finally:
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()
        await publisher.close()
