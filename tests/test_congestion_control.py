"""Transport-wide congestion control end to end: bots' subscribers send transport feedback about what the server
stamps, and the server's estimate for each receive transport follows that subscriber's link."""

from __future__ import annotations

import asyncio
import time

import pytest

from sfuctl.bots.config import BotsConfig
from sfuctl.bots.impairment import ImpairmentConfig
from sfuctl.bots.runner import run_bots
from sfuctl.media import MediaSpec, make_media

LINK_KBPS = 300  # the impaired subscriber's downlink (and uplink), under the ~600 kb/s the publisher sends


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ...]:
    files = make_media(MediaSpec(duration=4.0), tmp_path_factory.mktemp("cc-media"))
    return (str(files.video), str(files.audio))


def receive_transports(server) -> dict[str, dict]:
    """Stats of each open receive transport (one with consumers), by its peer's name."""
    return {
        next(iter(t.consumers.values())).peer.name: t.stats()
        for t in list(server.worker.transports)
        if t.consumers and not t.closed
    }


async def test_the_estimate_of_each_subscriber_follows_its_own_link(server, media) -> None:
    # bot-1 publishes ~600 kb/s; bot-2 subscribes on a clean link, bot-3 through a 300 kb/s shaper (0.5 s queue).
    config = BotsConfig(
        url=server.url, count=3, publishers=1, ramp=20, duration=9.0, media=media, seed=16,
        impairment=ImpairmentConfig(bandwidth_kbps=LINK_KBPS), impaired=(2,),
    )
    run = asyncio.create_task(run_bots(config))
    samples: list[tuple[float, dict[str, dict]]] = []
    try:
        while not run.done():
            await asyncio.sleep(0.1)
            transports = receive_transports(server)
            if len(transports) == 2:
                samples.append((time.monotonic(), transports))
    finally:
        report = await run
    assert report.failed == 0 and len(samples) > 30
    clean, shaped = "bot-2", "bot-3"
    assert all(sorted(sample) == [clean, shaped] for _, sample in samples)
    last = samples[-1][1]
    for name in (clean, shaped):  # the bots' transport feedback came, about every 100 ms
        assert last[name]["transport_feedback_received"] >= 20, last[name]
    # The shaped link filled its queue: over-use, then the estimate stays near what the link carries, while the
    # clean subscriber's keeps growing with what it takes (no probing yet: ~8% a second from 300 kb/s).
    first_overuse = next(t for t, sample in samples if sample[shaped]["overuse_events"] > 0)
    settled = [sample for t, sample in samples if t > first_overuse + 2.0]
    assert len(settled) > 10, samples[-1]
    estimates = [sample[shaped]["available_outgoing_bitrate_bps"] for sample in settled]
    assert 0.7 * LINK_KBPS * 1000 <= min(estimates) and max(estimates) <= 1.25 * LINK_KBPS * 1000, estimates
    assert last[clean]["overuse_events"] == 0, last[clean]
    assert last[clean]["available_outgoing_bitrate_bps"] > 1.5 * last[shaped]["available_outgoing_bitrate_bps"], last
