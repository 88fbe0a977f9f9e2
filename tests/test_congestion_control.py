"""Transport-wide congestion control end to end: bots' subscribers send transport feedback about what the server
stamps, the server's estimate for each receive transport follows that subscriber's link, and a simulcast
subscriber's layer follows the estimate (down on over-use, up only after a probe got through)."""

from __future__ import annotations

import asyncio
import time

import pytest

from sfuctl.bots.config import BotPlan, BotsConfig
from sfuctl.bots.impairment import ImpairmentConfig, ImpairmentStep
from sfuctl.bots.observer import Observer
from sfuctl.bots.runner import run_bots
from sfuctl.bots.stats import StreamSample
from sfuctl.media import MediaSpec, make_media, make_simulcast_media
from sfuctl.server.app import start_server
from sfuctl.server.config import ServerConfig

from .peers import AiortcPeer

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
    probe_types: set[tuple[int, int]] = set()  # (probe payload type, video payload type) of each receive transport
    try:
        while not run.done():
            await asyncio.sleep(0.1)
            transports = receive_transports(server)
            if len(transports) == 2:
                samples.append((time.monotonic(), transports))
            probe_types |= {
                (t.prober.payload_type, c.codec.payload_type)
                for t in list(server.worker.transports) if t.prober is not None
                for c in list(t.consumers.values()) if c.kind == "video"
            }
    finally:
        report = await run
    # The probes take the payload type of a video codec negotiated on their transport.
    assert probe_types and all(probe == video for probe, video in probe_types), probe_types
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


@pytest.fixture(scope="module")
def simulcast_media(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ...]:
    """160x90 / 320x180 / 640x360 VP8 at 150 / 500 / 1500 kb/s, a keyframe every second, and Opus."""
    spec = MediaSpec(width=640, height=360, video_bitrate=1_500_000, duration=4.0, keyframe_interval=1.0)
    files = make_simulcast_media(spec, tmp_path_factory.mktemp("cc-simulcast"))
    return (*map(str, files.videos), str(files.audio))


# The subscriber's link (both ways): 2 Mb/s, 400 kb/s from DOWN, 2 Mb/s again from UP (seconds after the start).
FAST, SLOW = ImpairmentConfig(bandwidth_kbps=2000), ImpairmentConfig(bandwidth_kbps=400)
DOWN, UP = 5.0, 11.0
# After the top layer is back, the run goes on this long to see the loss (then it stops; at UP + 15 s at most).
AFTER = 4.0


class Watch(Observer):
    """When the run started, and its per-stream rows with the time they came."""

    wants_streams = True

    def __init__(self) -> None:
        self.t0: float | None = None
        self.samples: list[tuple[float, StreamSample]] = []

    def started(self, t0: float) -> None:
        self.t0 = t0

    def streams(self, sample: StreamSample) -> None:
        self.samples.append((time.monotonic(), sample))


async def test_the_layer_follows_a_link_that_drops_and_recovers(server, simulcast_media) -> None:
    network = (ImpairmentStep(0.0, FAST), ImpairmentStep(DOWN, SLOW), ImpairmentStep(UP, FAST))
    plans = [
        BotPlan(0, "bot-1", "room-1", True, False, 0.0, False),
        BotPlan(1, "bot-2", "room-1", False, True, 0.3, True, network=network),
    ]
    config = BotsConfig(url=server.url, count=2, duration=UP + 15 + AFTER, media=simulcast_media, seed=16, simulcast=True)
    watch = Watch()
    stop = asyncio.Event()
    run = asyncio.create_task(run_bots(config, watch, plans=plans, stop=stop))
    layers: list[tuple[float, int | None]] = []  # (seconds since the start, the subscriber's current layer)
    try:
        while not run.done():
            await asyncio.sleep(0.2)
            consumers = [c for t in list(server.worker.transports) for c in t.consumers.values() if c.kind == "video"]
            if watch.t0 is not None and consumers:
                layers.append((time.monotonic() - watch.t0, consumers[0].current_layer))
                back = [t for t, layer in layers if t > UP and layer == 2]
                if back and layers[-1][0] > back[0] + AFTER:
                    stop.set()
    finally:
        report = await run
    assert report.failed == 0
    changes = [(round(t, 1), layer) for (t, layer), (_, before) in zip(layers, [(0.0, None), *layers]) if layer != before]
    before = [layer for t, layer in layers if t < DOWN]
    assert 2 in before and before[-1] >= 1, changes  # the top layer fits 2 Mb/s
    down = next(t for t, layer in layers if t > DOWN and layer == 0)
    assert down < DOWN + 5, changes
    assert all(layer == 0 for t, layer in layers if down < t < UP), changes  # no upgrade the link cannot take
    up = next(t for t, layer in layers if t > UP and layer == 2)
    assert up < UP + 15, changes
    # Once back at the top, the video lost (after retransmissions) stays under 1%.
    rows = [row for at, sample in watch.samples if at - watch.t0 > up + 1 for row in sample.consumers if row.kind == "video"]
    expected = sum(row.expected for row in rows)
    assert expected > 100 and sum(row.lost for row in rows) < 0.01 * expected, rows


async def test_max_incoming_bitrate_caps_a_publisher_with_remb(media) -> None:
    # aiortc's VP8 encoder starts at 500 kb/s and takes the REMB the server sends once per report interval.
    server = await start_server(ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0), max_incoming_bitrate=300_000))
    publisher = AiortcPeer(server.url, "capped", "alice")
    try:
        await publisher.join()
        await publisher.publish(media[0])
        sender = publisher.publish_pc.getSenders()[0]
        deadline = time.monotonic() + 15
        while getattr(sender, "_RTCRtpSender__encoder", None) is None or sender._RTCRtpSender__encoder.target_bitrate != 300_000:
            assert time.monotonic() < deadline, "no REMB reached the publisher"
            await asyncio.sleep(0.1)
    finally:
        await publisher.close()
        await server.close()


# Pausing: the subscriber's link is 2 Mb/s, 400 kb/s from PAUSE_DOWN (the layers above the lowest pause once it is
# down there), 2 Mb/s again from PAUSE_UP; the run stops AFTER_UPGRADE after its first upgrade (PAUSE_UP + 20 at most).
PAUSE_DOWN, PAUSE_UP = 2.0, 10.0
AFTER_UPGRADE = 1.0


async def test_the_layers_nobody_takes_pause_and_one_resumes_for_an_upgrade(server, simulcast_media) -> None:
    network = (ImpairmentStep(0.0, FAST), ImpairmentStep(PAUSE_DOWN, SLOW), ImpairmentStep(PAUSE_UP, FAST))
    plans = [
        BotPlan(0, "bot-1", "room-1", True, False, 0.0, False),
        BotPlan(1, "bot-2", "room-1", False, True, 0.3, True, network=network),
    ]
    config = BotsConfig(url=server.url, count=2, duration=PAUSE_UP + 20, media=simulcast_media, seed=16, simulcast=True)
    watch = Watch()
    stop = asyncio.Event()
    run = asyncio.create_task(run_bots(config, watch, plans=plans, stop=stop))
    layers: list[tuple[float, int | None]] = []  # (seconds since the start, the subscriber's current layer)
    # (seconds since the start, which of the publisher's encodings are active, the bitrate arriving from it)
    publisher: list[tuple[float, tuple[bool, ...], float]] = []
    try:
        while not run.done():
            await asyncio.sleep(0.2)
            if watch.t0 is None:
                continue
            at = time.monotonic() - watch.t0
            transports = list(server.worker.transports)
            producers = [(t, p) for t in transports for p in t.producers_by_mid.values() if p.kind == "video"]
            consumers = [c for t in transports for c in t.consumers.values() if c.kind == "video"]
            if producers:
                transport, producer = producers[0]
                publisher.append((at, tuple(producer.demand.active), transport.incoming_bitrate_bps))
            if consumers:
                layers.append((at, consumers[0].current_layer))
                upgraded = [t for t, layer in layers if t > PAUSE_UP and layer]
                if upgraded and at > upgraded[0] + AFTER_UPGRADE:
                    stop.set()
    finally:
        report = await run
    assert report.failed == 0
    changes = [(round(t, 1), layer) for (t, layer), (_, before) in zip(layers, [(0.0, None), *layers]) if layer != before]
    down = next(t for t, layer in layers if t > PAUSE_DOWN and layer == 0)
    up = next((t for t, layer in layers if t > PAUSE_UP and layer), None)
    assert up is not None, changes  # the paused layer was allocated, resumed, and forwarded from its keyframe
    # The two upper encodings paused while the subscriber took the lowest, and what the publisher sends dropped
    # (they are ~90% of it: 150 / 500 / 1500 kb/s).
    paused = [(t, bps) for t, active, bps in publisher if active == (True, False, False)]
    assert paused and down < paused[0][0] and paused[-1][0] < up, (changes, publisher)
    sending = [bps for t, active, bps in publisher if all(active) and bps > 0 and t < paused[0][0]]  # 0: unmeasured
    quiet = [bps for t, bps in paused if t > paused[0][0] + 2]
    assert sending and quiet and max(quiet) < 0.3 * min(sending), (sending, quiet)
    assert publisher[-1][1][1], publisher[-1]  # the layer upgraded to is sent again
    # The publishing bot's report: the upper encodings were paused, the lowest never; the one upgraded to resumed.
    sent = {stream["rid"]: stream for bot in report.bots for stream in bot["sent"] if stream["rid"] is not None}
    assert sent["q"]["pauses"] == 0 and not sent["q"]["paused"], sent["q"]
    assert sent["h"]["pauses"] >= 1 and sent["h"]["paused_s"] > 0 and not sent["h"]["paused"], sent["h"]
    assert sent["f"]["pauses"] >= 1 and sent["f"]["paused_s"] > 0, sent["f"]
