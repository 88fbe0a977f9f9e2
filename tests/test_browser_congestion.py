"""Chromium as a subscriber behind a shaped link: it sends transport feedback about what the server stamps, and the
server's estimate for its transport follows the link."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from sfuctl.bots.config import BotPlan, BotsConfig
from sfuctl.bots.runner import run_bots
from sfuctl.media import MediaSpec, make_media

from .peers import UdpRelay
from .test_browser import chromium, decoding, page_url, redirect_subscriptions, wait_for_streams  # noqa: F401

LINK_KBPS = 300  # the page's downlink, under the ~600 kb/s the publishing bot sends


@pytest.fixture(scope="module")
def bot_media(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ...]:
    files = make_media(MediaSpec(duration=4.0), tmp_path_factory.mktemp("browser-cc"))
    return (str(files.video), str(files.audio))


async def test_chromium_feedback_gives_an_estimate_near_its_shaped_link(server, chromium, bot_media) -> None:  # noqa: F811
    relay = UdpRelay(bandwidth_kbps=LINK_KBPS)
    media_address = f"127.0.0.1 {server.worker.rtc_port}"
    relayed = await relay.rewrite_answer(f"a=candidate:1 1 udp 1 {media_address} typ host")
    relay_address = re.search(r"(127\.0\.0\.1 \d+) typ host", relayed).group(1)
    config = BotsConfig(url=server.url, room="shaped", count=1, duration=25.0, media=bot_media, seed=16)
    stop = asyncio.Event()
    publisher = asyncio.create_task(run_bots(config, plans=[BotPlan(0, "bot", "shaped", True, False, 0.0, False)], stop=stop))
    page = None
    try:
        page = await chromium.open(page_url(server, "shaped", "human"), redirect_subscriptions(media_address, relay_address))
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
