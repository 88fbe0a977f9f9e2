"""The web page at / in headless Chromium, through a real server: browsers, aiortc peers, leave and rejoin."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import random
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import pytest
import websockets

from sfuctl.bots.config import BotsConfig
from sfuctl.bots.runner import run_bots
from sfuctl.client.signaling import SignalingClient
from sfuctl.media import MediaSpec, make_media
from sfuctl.server.app import start_server
from sfuctl.server.config import ServerConfig, url_host
from sfuctl.tokens import claims, mint

from . import whip_client
from .browser import BrowserPage, Chromium, unavailable_reason
from sfuctl.bots.data_peer import DataPeer
from .peers import AiortcPeer, UdpRelay
from .test_bots_cli import COMMAND as BOTS_COMMAND
from .test_forwarding import consumers_of, next_notification, stats, wait_for

DECODED_FRAMES = 40  # about two seconds of the fake camera
# Records the page's RTCPeerConnections (window.peerConnections) so a test can read their getStats.
RECORD_PEER_CONNECTIONS = """
window.peerConnections = [];
window.RTCPeerConnection = class extends RTCPeerConnection {
  constructor(...args) { super(...args); window.peerConnections.push(this); }
};
"""
# availableOutgoingBitrate of the connection that sends video (Chromium's bandwidth estimate), or null.
AVAILABLE_OUTGOING_BITRATE = """async () => {
  for (const pc of window.peerConnections) {
    const report = [...(await pc.getStats()).values()];
    if (report.some((s) => s.type === "outbound-rtp" && s.kind === "video")) {
      return report.find((s) => s.type === "candidate-pair" && s.nominated)?.availableOutgoingBitrate ?? null;
    }
  }
  return null;
}"""


@pytest.fixture(scope="module")
def chromium():
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    browser = Chromium()
    browser.start()
    yield browser
    browser.stop()


def write_detailed_y4m(path: Path, width: int = 512, height: int = 288, fps: int = 30, frames: int = 60) -> None:
    """Moving stripes under per-frame noise: hard to encode, so the encoder uses whatever bitrate it is given.

    512x288 because Chromium scales a bandwidth-limited camera down to 3/4: 384x216 still reaches 1 Mbps, while
    424x240 becomes 318x180, which Chromium caps at 600 kbps. Stripes and noise are each 0-127 per pixel, so
    adding the planes as big integers adds each byte without a carry.
    """
    rng = random.Random(7)
    size = width * height
    low_bits = bytes(range(128)) * 2  # translate table: a byte -> its value & 127
    chroma = bytes([128]) * (2 * (width // 2) * (height // 2))
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in range(frames):
            pattern = bytes(((k % 64) * 2 + 4 * frame) % 128 for k in range(width + 64))
            stripes = b"".join(pattern[y % 64 : y % 64 + width] for y in range(height))
            noise = rng.randbytes(size).translate(low_bits)
            luma = (int.from_bytes(stripes, "big") + int.from_bytes(noise, "big")).to_bytes(size, "big")
            out.write(b"FRAME\n" + luma + chroma)


@pytest.fixture
def detailed_chromium(tmp_path: Path):
    """A Chromium of its own whose fake camera plays a detailed source (the default camera needs ~200 kbps)."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    source = tmp_path / "detailed.y4m"
    write_detailed_y4m(source)
    browser = Chromium(extra_flags=(f"--use-file-for-fake-video-capture={source}",))
    browser.start()
    yield browser
    browser.stop()


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory):
    # Longer than any test here: aiortc's MediaPlayer bursts when it loops back to the start.
    spec = MediaSpec(width=320, height=180, fps=25, video_bitrate=300_000, duration=30.0)
    return make_media(spec, tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="module")
def h264_media(tmp_path_factory: pytest.TempPathFactory):
    spec = MediaSpec(width=320, height=180, fps=25, video_bitrate=300_000, duration=4.0, video_codec="h264")
    return make_media(spec, tmp_path_factory.mktemp("h264"))


def page_url(server, room: str, name: str) -> str:
    return f"http://{url_host(server.host)}:{server.port}/?{urlencode({'room': room, 'name': name, 'autojoin': '1'})}"


async def wait_for_streams(page: BrowserPage, ready: Callable[[list[dict]], bool], timeout: float) -> list[dict]:
    """Poll window.sfuctl.stats() until `ready` holds; fail with what the page showed otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        streams = await page.evaluate("sfuctl.stats()")
        if ready(streams):
            return streams
        if time.monotonic() > deadline:
            errors = await page.evaluate("sfuctl.errors")
            pytest.fail(f"streams={streams} errors={errors} exceptions={page.errors} console={page.console[-10:]}")
        await asyncio.sleep(0.3)


def decoding(peer_name: str, frames: int = DECODED_FRAMES) -> Callable[[list[dict]], bool]:
    """True once the page has decoded `frames` video frames from `peer_name`."""
    return lambda streams: any(
        s["peerName"] == peer_name and s["kind"] == "video" and s["framesDecoded"] >= frames for s in streams
    )


def stream_of(streams: list[dict], peer_name: str, kind: str) -> dict:
    return next(s for s in streams if s["peerName"] == peer_name and s["kind"] == kind)


async def tile_names(page: BrowserPage) -> list[str]:
    return await page.evaluate("[...document.querySelectorAll('#tiles .tile .name')].map(n => n.textContent)")


async def assert_clean(page: BrowserPage) -> None:
    assert await page.evaluate("sfuctl.errors") == [], page.console
    assert page.errors == []


def redirect_answers(media_address: str, relay_address: str, answers: str = "consumers") -> Callable[[str], str]:
    """Rewrite the candidate of every subscribe answer the page receives (of every publish answer with
    `answers="producers"`), so its receive (send) path runs through a relay."""

    def rewrite(text: str) -> str:
        message = json.loads(text)
        result = message.get("result") if isinstance(message, dict) else None
        if isinstance(result, dict) and answers in result and "sdp" in result:
            result["sdp"] = result["sdp"].replace(f" {media_address} typ host", f" {relay_address} typ host")
            return json.dumps(message)
        return text

    return rewrite


def browser_consumers(snapshot: dict) -> list[dict]:
    return [c for c in consumers_of(snapshot) if c["peer_name"] == "human"]


async def browser_streams_by_consumer(page: BrowserPage) -> dict[str, dict]:
    return {s["consumerId"]: s for s in await page.evaluate("sfuctl.stats()")}


async def wait_for_async(predicate, timeout: float, interval: float = 0.3) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(interval)
    return await predicate()


async def test_the_page_and_its_assets_are_served_and_the_websocket_stays_on_root(server):
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{server.port}/?room=x") as response:
            assert response.status == 200 and response.content_type == "text/html"
            html = await response.text()
        for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
            async with http.get(f"http://127.0.0.1:{server.port}{asset}") as response:
                assert response.status == 200, asset
                assert response.content_type in ("text/javascript", "application/javascript", "text/css"), asset
    async with websockets.connect(server.url + "/") as ws:
        await ws.send(json.dumps({"id": 1, "method": "ping"}))
        assert json.loads(await ws.recv()) == {"id": 1, "ok": True, "result": {"pong": True}}


async def test_two_browsers_in_one_room_decode_each_other(server, chromium):
    alice = await chromium.open(page_url(server, "pair", "alice"))
    bob = await chromium.open(page_url(server, "pair", "bob"))
    try:
        for page, me, other in ((alice, "alice", "bob"), (bob, "bob", "alice")):
            streams = await wait_for_streams(page, decoding(other), 20)
            video, audio = stream_of(streams, other, "video"), stream_of(streams, other, "audio")
            assert (video["codec"], audio["codec"]) == ("VP8", "opus")
            assert audio["packetsReceived"] > 0 and video["frameWidth"] > 0
            for s in (video, audio):
                assert s["packetsLost"] <= 2 + 0.01 * s["packetsReceived"], s
            assert await tile_names(page) == [f"{me} (you)", other]
            overlay = await page.evaluate(
                "id => document.querySelector(`[data-peer-id='${id}'] .stats`).textContent", video["peerId"]
            )
            video_line = r"video VP8 · \d+×\d+ .* \d+ kbps · lost -?\d+ .* jitter [\d.]+ ms · \d+ frames"
            assert re.search(video_line, overlay), overlay
            assert re.search(r"audio opus · \d+ kbps · lost -?\d+ ", overlay), overlay
        before = stream_of(await alice.evaluate("sfuctl.stats()"), "bob", "video")["framesDecoded"]
        await wait_for_streams(alice, decoding("bob", before + 10), 10)
        for page in (alice, bob):
            await assert_clean(page)
    finally:
        await alice.close()
        await bob.close()


async def test_browser_and_aiortc_peer_see_each_other_and_loss_stats_agree_with_the_server(server, chromium, media):
    bot = AiortcPeer(server.url, "mixed", "bot")
    # The browser receives through a relay that drops exactly 1 RTP packet in 20 of each stream and adds jitter.
    relay = UdpRelay(loss=0.05, periodic_loss=True, jitter=0.01, seed=3)
    media_address = f"127.0.0.1 {server.worker.rtc_port}"
    relay_address = await relay.start(media_address)
    page = None
    try:
        await bot.join()
        await bot.publish(str(media.video), str(media.audio))
        relayed_page = redirect_answers(media_address, relay_address)
        page = await chromium.open(page_url(server, "mixed", "human"), relayed_page)
        # The browser decodes the bot's VP8 (NACK repairs the relay's loss) and receives its Opus.
        streams = await wait_for_streams(page, decoding("bot"), 20)
        assert stream_of(streams, "bot", "audio")["packetsReceived"] > 0
        # The bot receives the browser's VP8 and Opus and decodes them.
        added = [(await next_notification(bot.signaling, "producerAdded", timeout=10))["producer"] for _ in range(2)]
        assert sorted((p["kind"], p["codec"], p["peerName"]) for p in added) == [
            ("audio", "opus", "human"),
            ("video", "VP8", "human"),
        ]
        await bot.subscribe(added)
        assert await wait_for(lambda: bot.video() and bot.video()[0].frames >= 25 and bot.audio()[0].frames >= 25, 15)

        # Loss and jitter: the browser's getStats and the server's figures for the same consumers, which the
        # server takes from the browser's RTCP receiver reports. Audio has no NACK, so it keeps the relay's 5%.
        before = await browser_streams_by_consumer(page)
        reports = {c["id"]: c["reports_received"] for c in browser_consumers(await stats(bot.signaling))}
        assert set(reports) == set(before)

        async def all_reported_again() -> bool:
            consumers = browser_consumers(await stats(bot.signaling))
            return all(c["reports_received"] > reports[c["id"]] for c in consumers)

        assert await wait_for_async(all_reported_again, 15)
        consumers = browser_consumers(await stats(bot.signaling))
        after = await browser_streams_by_consumer(page)
        for consumer in consumers:
            first, last = before[consumer["id"]], after[consumer["id"]]
            assert (last["ssrc"], last["kind"]) == (consumer["ssrc"], consumer["kind"])
            assert consumer["jitter_ms"] > 0.5 and last["jitter"] > 0.0005  # the relay adds up to 10 ms
            jitter_slack = max(3.0, 0.5 * consumer["jitter_ms"])
            assert abs(1000 * last["jitter"] - consumer["jitter_ms"]) <= jitter_slack, (consumer, last)
            if consumer["kind"] == "audio":
                # The count only grows, and the report was written between the two readings (+-1 for a packet
                # the relay reordered).
                assert first["packetsLost"] - 1 <= consumer["packets_lost"] <= last["packetsLost"] + 1, (first, last)
                expected = last["packetsLost"] + last["packetsReceived"]
                assert last["packetsLost"] / expected == pytest.approx(0.05, abs=0.01)
                # The server's fraction spans the last few reports, maybe only ~100 packets: +-1 lost is 1 pp.
                assert consumer["fraction_lost"] == pytest.approx(0.05, abs=0.015)
            else:
                # NACK repairs video: the count moves up and down around zero (a report clamps it at zero).
                slack = 3 + 0.01 * last["packetsReceived"]
                assert last["packetsLost"] <= slack
                assert abs(consumer["packets_lost"] - max(0, last["packetsLost"])) <= slack
        assert relay.dropped > 0
        await assert_clean(page)
    finally:
        if page is not None:
            await page.close()
        await bot.close()
        relay.close()


async def test_browser_watches_ffmpeg_publishing_h264_over_whip(server, chromium, h264_media, tmp_path):
    page = await chromium.open(page_url(server, "whip", "viewer"))
    ffmpeg = multiprocessing.get_context("spawn").Process(
        target=whip_client.publish,
        args=(f"http://127.0.0.1:{server.port}/whip/whip", str(h264_media.video), str(h264_media.audio), str(tmp_path), 3.5),
    )
    try:
        await page.wait_until("sfuctl.state === 'joined'", 10)
        ffmpeg.start()
        streams = await wait_for_streams(page, lambda streams: any(s["framesDecoded"] >= 25 for s in streams), 20)
        assert sorted((s["kind"], s["codec"]) for s in streams) == [("audio", "opus"), ("video", "H264")]
        assert stream_of(streams, streams[0]["peerName"], "video")["frameWidth"] == 320
        # FFmpeg ends its WHIP session when it is done: its tile goes away.
        await page.wait_until("document.querySelectorAll('#tiles .tile').length === 1", 15)
        await assert_clean(page)
    finally:
        ffmpeg.join(10)
        if ffmpeg.is_alive():
            ffmpeg.kill()
        await page.close()


async def test_a_refused_join_is_shown_on_the_page(server, chromium):
    page = await chromium.open(page_url(server, "r" * 65, "x"))  # the server takes room names up to 64 characters
    try:
        await page.wait_until("sfuctl.errors.length > 0 && sfuctl.state === 'idle'", 10)
        shown = await page.evaluate("document.querySelector('#errors').textContent")
        assert "could not join room" in shown and "bad_request" in shown, shown
        assert not server.worker.routers
        assert page.errors == []
    finally:
        await page.close()


async def test_the_page_follows_a_big_room_whose_joins_and_leaves_come_once_a_second(server, chromium):
    # above 100 peers the server sends peersChanged instead of peerJoined/peerLeft (docs/limits.md)
    page = await chromium.open(page_url(server, "crowd", "watcher"))
    others: list[SignalingClient] = []
    try:
        await page.wait_until("sfuctl.state === 'joined'", 10)
        for index in range(104):
            client = await SignalingClient.connect(server.url)
            await client.request("join", room="crowd", name=f"p{index}")
            others.append(client)
        others_shown = "document.querySelectorAll('#tiles .tile').length - 1"
        await page.wait_until(f"{others_shown} === 104", 10)
        for client in others[-4:]:  # announced in a peersChanged's `left`
            await client.close()
        await page.wait_until(f"{others_shown} === 100", 10)
        assert page.errors == []
    finally:
        for client in others:
            await client.close()
        await page.close()


async def test_leave_and_rejoin(server, chromium):
    stay = await chromium.open(page_url(server, "again", "stay"))
    roam = await chromium.open(page_url(server, "again", "roam"))
    try:
        await wait_for_streams(stay, decoding("roam"), 20)
        roam_id = await roam.evaluate("sfuctl.peerId")
        await roam.click("#leave")
        await roam.wait_until("sfuctl.state === 'idle' && !document.querySelector('#tiles .tile')", 5)
        await stay.wait_until(f"!document.querySelector(\"[data-peer-id='{roam_id}']\")", 5)
        assert await wait_for(lambda: len(server.worker.routers["again"].peers) == 1, 3)
        assert await stay.evaluate("sfuctl.stats()") == []
        # alone, and not joined: each page says what to do
        assert "Nobody else is in room again" in await stay.evaluate("document.querySelector('#empty').textContent")
        assert "Pick a room" in await roam.evaluate("document.querySelector('#empty').textContent")

        await roam.click("#join")  # the form kept room and name
        await roam.wait_until("sfuctl.state === 'joined'", 10)
        assert await roam.evaluate("sfuctl.peerId") != roam_id
        await wait_for_streams(stay, decoding("roam"), 20)
        await wait_for_streams(roam, decoding("stay"), 20)
        assert sorted(await tile_names(stay)) == ["roam", "stay (you)"]
        assert await stay.evaluate("document.querySelector('#empty').textContent") == ""

        def stay_video_paused() -> bool:
            producers = server.worker.routers["again"].producers.values()
            return next(p.paused for p in producers if p.peer.name == "stay" and p.kind == "video")

        await stay.click("#mute-video")  # the camera button pauses the producer on the server
        assert await wait_for(stay_video_paused, 5)


        async def roam_sees_it_paused() -> bool:
            streams = await roam.evaluate("sfuctl.stats()")
            return any(s["peerName"] == "stay" and s["kind"] == "video" and s["paused"] for s in streams)

        assert await wait_for_async(roam_sees_it_paused, 5)
        await stay.click("#mute-video")
        assert await wait_for(lambda: not stay_video_paused(), 5)
        await stay.click("#toggle-stats")  # the overlays hide
        assert await stay.evaluate("getComputedStyle(document.querySelector('.tile .stats')).display") == "none"
        for page in (stay, roam):
            await assert_clean(page)
    finally:
        await stay.close()
        await roam.close()


@pytest.mark.parametrize("transport_cc", [False, True], ids=["receiver-reports", "transport-cc"])
async def test_a_browser_ramps_up_its_video_on_the_servers_feedback(detailed_chromium, transport_cc):
    # Receiver reports alone (no REMB, no transport-cc): Chromium's loss-based estimate grows (~8% a second) only
    # while the server's RTCP receiver reports keep coming and show no loss; reports that stop, or claim loss, keep
    # it at or below ~300 kbps. With transport-cc, Chromium's delay-based estimate runs on the server's transport
    # feedback: feedback that stopped, or said packets were lost or queued, would keep it down just the same.
    config = ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0), consent_timeout=5.0, transport_cc=transport_cc)
    server = await start_server(config)
    page = await detailed_chromium.open(page_url(server, "ramp", "pub"), init_script=RECORD_PEER_CONNECTIONS)
    client = await SignalingClient.connect(server.url)

    async def video_producer() -> dict | None:
        snapshot = await client.request("getStats", room="ramp")
        return next((p for room in snapshot["rooms"] for p in room["producers"] if p["kind"] == "video"), None)

    async def sending() -> bool:
        producer = await video_producer()
        return producer is not None and producer["bitrate_bps"] > 0

    try:
        assert await wait_for_async(sending, 15), (page.console[-10:], page.errors)
        samples, available = [], []
        for _ in range(16):  # one per server report interval
            samples.append(await video_producer())
            available.append(await page.evaluate(AVAILABLE_OUTGOING_BITRATE))
            await asyncio.sleep(1)
        assert None not in samples and None not in available, (samples, available)
        bitrates = [s["bitrate_bps"] for s in samples]
        first, last = sum(bitrates[:3]) / 3, sum(bitrates[-3:]) / 3
        if transport_cc:
            # Chromium's initial probes (3x and 6x its 300 kbps start) come back in the feedback: its estimate is
            # over twice its start from the first sample on and ends far above what 16 s of receiver reports give
            # (~1 Mbps); the video follows (measured: estimate 0.9-3.9 Mbps at the first sample, 2.0-3.9 Mbps at
            # the last, video peaks 1.0-2.8 Mbps; the lower figures on a loaded machine).
            assert available[0] > 600_000 and available[-1] > 1_500_000, (bitrates, available)
            assert max(bitrates) > 800_000, (bitrates, available)
        else:
            assert last > 2 * first, (bitrates, available)  # measured 3.2-3.8x
            assert available[-1] > 2 * available[0], (bitrates, available)  # measured 3.3-3.5x
        assert samples[-1]["packets_lost"] <= 0.01 * samples[-1]["packets"], samples[-1]
        assert max(s["fraction_lost"] for s in samples) < 0.02, samples  # Chromium's threshold for "no loss"
        (transport,) = [t for t in server.worker.transports if t.producers]
        figures = transport.stats()
        if transport_cc:  # every packet recorded (media, audio, padding), feedback every 100 ms
            assert figures["transport_cc_packets"] >= samples[-1]["packets"], figures
            assert figures["transport_feedback_sent"] >= 10 * len(samples), figures
        else:
            assert figures["transport_cc_packets"] == figures["transport_feedback_sent"] == 0, figures
        await assert_clean(page)
    finally:
        await client.close()
        await page.close()
        await server.close()


async def test_the_page_joins_with_a_token_and_a_second_join_as_the_same_identity_replaces_it(chromium):
    secret = "page-secret-" + "p" * 32
    running = await start_server(ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0), consent_timeout=5.0, auth_secret=secret))
    token = mint(secret, claims(room="guarded", identity="alice", name="Alice", ttl=60))
    base = f"http://127.0.0.1:{running.port}/"
    without = await chromium.open(f"{base}?{urlencode({'room': 'guarded', 'autojoin': '1'})}")
    first = await chromium.open(f"{base}?{urlencode({'room': 'guarded', 'token': token, 'autojoin': '1'})}")
    second = None
    try:
        await without.wait_until("sfuctl.errors.length > 0 && sfuctl.state === 'idle'", 10)
        assert "unauthorized" in await without.evaluate("document.querySelector('#errors').textContent")
        await first.wait_until("sfuctl.state === 'joined'", 15)
        assert await first.evaluate("sfuctl.peerId") == "alice"
        assert [p.name for p in running.worker.routers["guarded"].peers.values()] == ["Alice"]
        second = await chromium.open(f"{base}?{urlencode({'room': 'guarded', 'token': token, 'autojoin': '1'})}")
        await second.wait_until("sfuctl.state === 'joined'", 15)
        await first.wait_until("sfuctl.state === 'idle'", 10)
        assert any("duplicate_identity" in e for e in await first.evaluate("sfuctl.errors"))
        assert list(running.worker.routers["guarded"].peers) == ["alice"]
        await assert_clean(second)
    finally:
        for page in (without, first, second):
            if page is not None:
                await page.close()
        await running.close()


async def test_the_page_outlines_each_talking_bot_and_reads_its_forwarded_audio_level(server, chromium, media):
    # two bots take 3-s turns (RFC 6464 levels, docs/bots.md --speakers); the server forwards each level in its
    # consumers' headers, so Chromium's getSynchronizationSources() follows it, and activeSpeaker moves the outline
    config = BotsConfig(url=server.url, room="talk", count=2, ramp=20, duration=12.5, media=(str(media.audio),), seed=3,
                        video=False, speakers=2)
    bots = asyncio.create_task(run_bots(config))
    page = await chromium.open(page_url(server, "talk", "listener"))
    try:
        await page.wait_until("sfuctl.audioLevels().length === 2", 15)
        outlined: set[str] = set()
        levels: list[float] = []
        for _ in range(40):  # 10 s: at least three turns
            outlined.add(await page.evaluate("document.querySelector('#tiles .tile.speaking .name')?.textContent ?? ''"))
            levels += [level for level in await page.evaluate("sfuctl.audioLevels()") if level is not None]
            await asyncio.sleep(0.25)
        assert {"bot-1", "bot-2"} <= outlined, outlined
        assert max(levels) > 0.05  # -20 dBov speech reads 0.1
        assert min(levels) < 0.01  # silence between words and turns reads ~0
        report = await bots
        assert all(bot["speaker"]["misnamed"] == 0 for bot in report.bots)
        await assert_clean(page)
    finally:
        await page.close()
        if not bots.done():
            bots.cancel()


async def test_chat_between_a_browser_and_two_bots_goes_through_the_sfu_both_ways(server, chromium):
    page = await chromium.open(page_url(server, "chat", "carol"))
    alice = await DataPeer.join(server.url, "chat", "alice")
    bob = await DataPeer.join(server.url, "chat", "bob")
    try:
        await page.wait_until("sfuctl.state === 'joined'", 10)
        carol_id = await page.evaluate("sfuctl.peerId")
        alice_chat = alice.send.open("chat")
        bob_chat = bob.send.open("chat")
        # The browser's chat channel reaches both bots; theirs reach it and each other.
        assert await wait_for(lambda: len(alice.consumers) == len(bob.consumers) == 2, 15)
        assert {c["label"] for c in alice.consumers.values()} == {"chat"}
        assert await page.evaluate("sfuctl.chat('hello from chromium')")
        assert alice.send.send(alice_chat, "hi carol, alice here")
        assert bob.send.send(bob_chat, "bob: é 漢字")
        await page.wait_until("sfuctl.messages.length === 3", 10)
        shown = await page.evaluate("sfuctl.messages")
        assert {(m["from"], m["text"]) for m in shown} == {
            (None, "hello from chromium"),
            ("alice", "hi carol, alice here"),
            ("bob", "bob: é 漢字"),
        }
        log = await page.evaluate("document.querySelector('#chat-log').textContent")
        assert "alice: hi carol, alice here" in log
        browser = type("Browser", (), {"peer_id": carol_id})
        assert await wait_for(lambda: alice.from_peer(browser) and bob.from_peer(browser), 10)
        assert alice.from_peer(browser) == bob.from_peer(browser) == ["hello from chromium"]
        assert bob.from_peer(alice) == ["hi carol, alice here"] and alice.from_peer(bob) == ["bob: é 漢字"]
        await assert_clean(page)
    finally:
        await alice.close()
        await bob.close()
        await page.close()


# Plays a WHEP endpoint (video only) in the page; the connection is window.whep.
WHEP_PLAY = """async (url) => {
  const pc = (window.whep = new RTCPeerConnection());
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.ontrack = ({ track }) => {
    const video = Object.assign(document.createElement("video"), { muted: true, autoplay: true });
    video.srcObject = new MediaStream([track]);
    document.body.append(video);
  };
  await pc.setLocalDescription(await pc.createOffer());
  const response = await fetch(url, { method: "POST", headers: { "Content-Type": "application/sdp" }, body: pc.localDescription.sdp });
  if (response.status !== 201) throw new Error(`WHEP answered ${response.status}: ${await response.text()}`);
  await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
}"""
# webrtc-stats of the WHEP connection's inbound video (null before it has any).
WHEP_VIDEO_STATS = """async () => {
  const stats = [...(await window.whep.getStats()).values()];
  const video = stats.find((s) => s.type === "inbound-rtp" && s.kind === "video");
  return video ? { framesDecoded: video.framesDecoded, freezeCount: video.freezeCount,
                   totalFreezesDuration: video.totalFreezesDuration, pauseCount: video.pauseCount } : null;
}"""
STALLS = 3  # the publisher stalls this many times ...
STALL_S = 0.6  # ... for this long (a freeze at 25 fps: over max(3 x 40 ms, 40 ms + 150 ms)), and less than a pause (5 s)
STALL_SPACING_S = 1.5  # > 30 frames at 25 fps, so each stall is judged against a mean of steady frames


async def test_a_bot_counts_the_freezes_chromium_counts_on_the_same_stream(server, chromium, media):
    """webrtc-stats freezeCount: Chromium (over WHEP) and a bot (over the websocket) receive one bot-published
    stream whose publisher process is stopped STALLS times (SIGSTOP/SIGCONT): both count STALLS freezes."""
    publisher = await asyncio.create_subprocess_exec(
        *BOTS_COMMAND, "--url", server.url, "--room", "freeze", "--count", "1", "--processes", "1", "--no-audio",
        "--no-subscribe", "--media", str(media.video), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    stop = asyncio.Event()
    subscriber = None
    page = await chromium.open(f"http://127.0.0.1:{server.port}/")
    try:
        published = await wait_for(lambda: len(getattr(server.worker.routers.get("freeze"), "producers", ())) == 1, 15)
        assert published, "the publishing bot did not publish"
        subscriber = asyncio.create_task(run_bots(
            BotsConfig(url=server.url, room="freeze", count=1, publishers=0, seed=5), stop=stop
        ))
        await page.evaluate(WHEP_PLAY, f"http://127.0.0.1:{server.port}/whep/freeze")
        # Chromium judges freezes once it has rendered a few frames: start stalling after a second of them.
        before = None
        for _ in range(100):
            before = await page.evaluate(WHEP_VIDEO_STATS)
            if before is not None and before["framesDecoded"] >= 25:
                break
            await asyncio.sleep(0.2)
        assert before is not None and before["framesDecoded"] >= 25, before
        for _ in range(STALLS):
            os.kill(publisher.pid, signal.SIGSTOP)
            await asyncio.sleep(STALL_S)
            os.kill(publisher.pid, signal.SIGCONT)
            await asyncio.sleep(STALL_SPACING_S)
        after = await page.evaluate(WHEP_VIDEO_STATS)
        stop.set()
        report = await subscriber
    finally:
        stop.set()
        if subscriber is not None:
            await asyncio.gather(subscriber, return_exceptions=True)
        os.kill(publisher.pid, signal.SIGCONT)
        publisher.terminate()
        await publisher.communicate()
        await page.close()
    (bot,) = report.bots
    (video,) = [c for c in bot["consumers"] if c["kind"] == "video"]
    assert before["freezeCount"] == 0 and after["pauseCount"] == 0
    # The same count, exactly: each stall is one freeze for both. Only the durations differ: Chromium measures
    # at rendering, after its jitter buffer (the frame before a stall waited there, the late one after it is
    # shown at once), the bot at arrival, so Chromium's totalFreezesDuration is shorter by its playout delay.
    assert video["freezes"] == after["freezeCount"] == STALLS, (after, video["freeze_log"])
    assert len(video["freeze_log"]) == STALLS
