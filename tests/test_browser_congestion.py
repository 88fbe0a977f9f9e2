"""Chromium behind a shaped link. As a subscriber it sends transport feedback about what the server stamps, and the
server's estimate for its transport follows the link; as a publisher it takes the server's transport feedback, and
its own estimate follows its uplink."""

from __future__ import annotations

import asyncio
import time

import pytest

from sfuctl.bots.config import BotPlan, BotsConfig
from sfuctl.bots.runner import run_bots
from sfuctl.media import MediaSpec, make_media
from sfuctl.server.app import start_server
from sfuctl.server.config import ServerConfig

from .peers import UdpRelay
from .test_browser import (  # noqa: F401 (fixtures)
    AVAILABLE_OUTGOING_BITRATE,
    RECORD_PEER_CONNECTIONS,
    chromium,
    decoding,
    detailed_chromium,
    page_url,
    redirect_answers,
    wait_for_async,
    wait_for_streams,
)

LINK_KBPS = 300  # the page's downlink, under the ~600 kb/s the publishing bot sends
UPLINK_KBPS = 1500  # the publishing page's uplink, under the ~2.5 Mb/s its detailed camera could take


@pytest.fixture(scope="module")
def bot_media(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ...]:
    files = make_media(MediaSpec(duration=4.0), tmp_path_factory.mktemp("browser-cc"))
    return (str(files.video), str(files.audio))


async def test_chromium_feedback_gives_an_estimate_near_its_shaped_link(server, chromium, bot_media) -> None:  # noqa: F811
    relay = UdpRelay(bandwidth_kbps=LINK_KBPS)
    media_address = f"127.0.0.1 {server.worker.rtc_port}"
    relay_address = await relay.start(media_address)
    config = BotsConfig(url=server.url, room="shaped", count=1, duration=25.0, media=bot_media, seed=16)
    stop = asyncio.Event()
    publisher = asyncio.create_task(run_bots(config, plans=[BotPlan(0, "bot", "shaped", True, False, 0.0, False)], stop=stop))
    page = None
    try:
        page = await chromium.open(page_url(server, "shaped", "human"), redirect_answers(media_address, relay_address))
        await wait_for_streams(page, decoding("bot", 5), 20)

        def estimate() -> dict | None:
            transports = [t for t in list(server.worker.transports) if t.estimator is not None and t.consumers]
            return transports[0].stats() if transports else None

        deadline = time.monotonic() + 15
        while (estimate() or {}).get("overuse_events", 0) == 0:  # the relay's queue filled: the estimate reacted
            assert time.monotonic() < deadline, estimate()
            await asyncio.sleep(0.2)
        await asyncio.sleep(3.0)
        samples = []
        for _ in range(20):
            samples.append(estimate())
            await asyncio.sleep(0.2)
        assert all(s["transport_feedback_received"] > 0 for s in samples), samples[-1]
        estimates = [s["available_outgoing_bitrate_bps"] for s in samples]
        assert all(0.7 * LINK_KBPS * 1000 <= e <= 1.3 * LINK_KBPS * 1000 for e in estimates), estimates
    finally:
        stop.set()
        await publisher
        if page is not None:
            await page.close()
        relay.close()


async def test_chromium_publishing_on_a_shaped_uplink_follows_the_servers_feedback(detailed_chromium) -> None:  # noqa: F811
    # On receiver reports alone Chromium's estimate grows ~8% a second from 300 kb/s; on the server's transport
    # feedback its probes come back and its delay-based estimate finds the link, and the link's queue does not
    # overflow (what docs/congestion-control.md measures with bench/browser_uplink.py: how soon).
    server = await start_server(ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0), consent_timeout=5.0))
    relay = UdpRelay(uplink_kbps=UPLINK_KBPS)
    media_address = f"127.0.0.1 {server.worker.rtc_port}"
    relay_address = await relay.start(media_address)
    page = await detailed_chromium.open(
        page_url(server, "uplink", "pub"), redirect_answers(media_address, relay_address, "producers"), RECORD_PEER_CONNECTIONS
    )

    def publishing() -> dict | None:
        transports = [t for t in list(server.worker.transports) if t.producers_by_mid]
        return transports[0].stats() if transports else None

    async def recording() -> bool:
        return (publishing() or {}).get("transport_cc_packets", 0) > 0

    try:
        assert await wait_for_async(recording, 15), page.console[-10:]
        await asyncio.sleep(4.0)
        uplink = relay.uplink
        assert uplink is not None
        datagrams, dropped = uplink.model.datagrams, uplink.rtp_dropped
        estimates = []
        for _ in range(6):
            estimates.append(await page.evaluate(AVAILABLE_OUTGOING_BITRATE))
            await asyncio.sleep(0.5)
        figures = publishing()
        assert figures is not None and figures["transport_feedback_sent"] >= 30, figures
        link = UPLINK_KBPS * 1000
        assert all(e is not None and 0.5 * link <= e <= 1.3 * link for e in estimates), estimates
        # What the server saw arrive over its last report interval: the shaper lets no more through (its burst
        # allowance, 3000 bytes, adds at most 24 kb/s to a second).
        assert 0.4 * link <= figures["incoming_bitrate_bps"] <= link + 24_000, (figures, estimates)
        sent = uplink.model.datagrams - datagrams
        assert uplink.rtp_dropped - dropped <= 0.01 * sent, (uplink.rtp_dropped - dropped, sent, estimates)
    finally:
        await page.close()
        relay.close()
        await server.close()


# The a=ssrc values of each video m-section of the page's remote descriptions (the server's answers), and its
# inbound video streams (webrtc-stats: ssrc, framesDecoded), over every connection the page opened.
REMOTE_VIDEO_SSRCS = """async () => {
  const sections = [];
  const inbound = [];
  for (const pc of window.peerConnections) {
    for (const section of (pc.remoteDescription?.sdp ?? "").split("\\r\\nm=").slice(1)) {
      if (section.startsWith("video")) sections.push([...section.matchAll(/a=ssrc:(\\d+) /g)].map((m) => Number(m[1])));
    }
    for (const s of (await pc.getStats()).values()) {
      if (s.type === "inbound-rtp" && s.kind === "video") inbound.push({ ssrc: s.ssrc, framesDecoded: s.framesDecoded });
    }
  }
  return { sections, inbound };
}"""
# Plays a WHEP endpoint (video only) in window.whep, its answer's candidate address rewritten (to go through a relay).
WHEP_PLAY_VIA = """async ([url, from, to]) => {
  const pc = (window.whep = new RTCPeerConnection());
  pc.addTransceiver("video", { direction: "recvonly" });
  await pc.setLocalDescription(await pc.createOffer());
  const response = await fetch(url, { method: "POST", headers: { "Content-Type": "application/sdp" }, body: pc.localDescription.sdp });
  if (response.status !== 201) throw new Error(`WHEP answered ${response.status}: ${await response.text()}`);
  await pc.setRemoteDescription({ type: "answer", sdp: (await response.text()).replaceAll(from, to) });
}"""


async def test_chromium_keeps_its_track_on_the_consumer_and_reports_the_announced_probe_ssrc(server, chromium, bot_media) -> None:  # noqa: F811
    """The page (its subscribe answer) and a WHEP player (its HTTP answer) in Chromium each get their transport's
    probe SSRC after the consumer's in the video m-section: the probes go on the wire with it, Chromium decodes
    the consumer's SSRC, and its transport feedback covers the probes (their clusters give results)."""
    relays = (UdpRelay(), UdpRelay())
    media_address = f"127.0.0.1 {server.worker.rtc_port}"
    page_relay, whep_relay = [await relay.start(media_address) for relay in relays]
    config = BotsConfig(url=server.url, room="probes", count=1, duration=20.0, media=bot_media, seed=16)
    stop = asyncio.Event()
    publisher = asyncio.create_task(run_bots(config, plans=[BotPlan(0, "bot", "probes", True, False, 0.0, False)], stop=stop))
    page = None
    try:
        page = await chromium.open(page_url(server, "probes", "human"), redirect_answers(media_address, page_relay), RECORD_PEER_CONNECTIONS)
        await wait_for_streams(page, decoding("bot", 10), 20)
        await page.evaluate(WHEP_PLAY_VIA, [f"http://127.0.0.1:{server.port}/whep/probes", media_address, whep_relay])

        def receiving() -> list:
            return [t for t in list(server.worker.transports) if t.consumers and t.probe_ssrc is not None]

        async def probed_and_decoding() -> bool:
            seen = await page.evaluate(REMOTE_VIDEO_SSRCS)
            decoded = [s for s in seen["inbound"] if (s["framesDecoded"] or 0) >= 10]
            results = [t.stats()["probe_results"] for t in receiving()]
            return len(decoded) == 2 and len(results) == 2 and min(results) > 0

        assert await wait_for_async(probed_and_decoding, 20), (await page.evaluate(REMOTE_VIDEO_SSRCS), page.console[-10:])
        seen = await page.evaluate(REMOTE_VIDEO_SSRCS)
        transports = receiving()
        announced = sorted(s for s in seen["sections"] if s)  # the receiving ones (the page's camera has none)
        expected = sorted([next(iter(t.consumers)), t.probe_ssrc] for t in transports)
        assert announced == expected, (announced, expected)  # the consumer's SSRC, then the probe SSRC
        # Chromium's video streams are the consumers' SSRCs, decoding; none is the probe SSRC.
        assert sorted(s["ssrc"] for s in seen["inbound"]) == sorted(consumer for consumer, _ in expected), seen
        # On the wire: each relay carried padding-only probes on the probe SSRC its connection was told of.
        wire = sorted(ssrc for relay in relays for ssrc in relay.streams)
        for _, probe in expected:
            assert probe in wire and any(relay.streams.get(probe) and relay.streams[probe].forwarded > 0 for relay in relays), wire
    finally:
        stop.set()
        await publisher
        if page is not None:
            await page.close()
        for relay in relays:
            relay.close()
