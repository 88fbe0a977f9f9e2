"""Simulcast end to end: bots publish three encodings with RIDs, the server forwards each subscriber the one that
fits its link and its wishes, subscribers see one continuous stream."""

from __future__ import annotations

import asyncio
import time

import pytest

from sfuctl.bots.config import BotPlan, BotsConfig
from sfuctl.bots.impairment import ImpairmentConfig, ImpairmentStep
from sfuctl.bots.observer import Collector
from sfuctl.bots.runner import run_bots
from sfuctl.client.signaling import SignalingClient, SignalingError
from sfuctl.media import MediaSpec, make_simulcast_media

from .peers import AiortcPeer
from .test_forwarding import next_notification

TOP = (640, 360)
LOW = (160, 90)


@pytest.fixture(scope="module")
def simulcast_media(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ...]:
    """160x90 / 320x180 / 640x360 VP8 at 150 / 500 / 1500 kb/s, a keyframe every second, and Opus."""
    spec = MediaSpec(width=TOP[0], height=TOP[1], video_bitrate=1_500_000, duration=4.0, keyframe_interval=1.0)
    files = make_simulcast_media(spec, tmp_path_factory.mktemp("simulcast-media"))
    return (*map(str, files.videos), str(files.audio))


async def producer_of(client: SignalingClient, joined: dict, timeout: float = 15.0) -> dict:
    """The room's video producer: from the join result or the next producerAdded."""
    for producer in joined["producers"]:
        if producer["kind"] == "video":
            return producer
    while True:
        params = await next_notification(client, "producerAdded", timeout)
        if params["producer"]["kind"] == "video":
            return params["producer"]


async def until(condition, timeout: float, step: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s")
        await asyncio.sleep(step)


async def test_preferred_layers_move_a_decoding_subscriber_down_and_bad_wishes_are_errors(server, simulcast_media):
    config = BotsConfig(
        url=server.url, room="prefer", count=1, audio=False, subscribe=False, simulcast=True,
        media=simulcast_media, duration=30.0, seed=5,
    )
    publisher = asyncio.create_task(run_bots(config))
    viewer = AiortcPeer(server.url, "prefer", "viewer")
    try:
        joined = await viewer.join()
        producer = await producer_of(viewer.signaling, joined)
        assert producer["spatialLayers"] == 3
        result = await viewer.subscribe([producer])
        consumer_id = result["consumers"][0]["id"]
        # An unconstrained subscriber starts on the top encoding and decodes it.
        await until(lambda: any(TOP in r.sizes for r in viewer.video()), 15)

        moved = await viewer.signaling.request("setPreferredLayers", consumerId=consumer_id, spatialLayer=0)
        assert moved["targetSpatialLayer"] == 0
        changed = await next_notification(viewer.signaling, "consumerLayersChanged", 10)
        if changed["spatialLayer"] == 2:  # the first forwarded keyframe (top) may still be in the queue
            changed = await next_notification(viewer.signaling, "consumerLayersChanged", 10)
        assert (changed["consumerId"], changed["spatialLayer"]) == (consumer_id, 0)
        await until(lambda: any(LOW in r.sizes for r in viewer.video()), 10)
        frames_after_switch = viewer.video()[0].frames
        await asyncio.sleep(1.0)
        assert viewer.video()[0].frames > frames_after_switch + 10  # it keeps decoding after the switch

        bad = [
            ("setPreferredLayers", {"consumerId": consumer_id, "spatialLayer": 3}, "from 0 to 2"),
            ("setPreferredLayers", {"consumerId": consumer_id, "spatialLayer": 1, "temporalLayer": 9}, "temporalLayer"),
            ("setPreferredLayers", {"consumerId": "c-nope", "spatialLayer": 0}, "c-nope"),
            ("setMaxSize", {"consumerId": consumer_id, "width": -1, "height": 90}, "positive integers"),
            ("setConsumerPriority", {"consumerId": consumer_id, "priority": 0}, "from 1 to 255"),
        ]
        for method, params, message in bad:
            with pytest.raises(SignalingError, match=message):
                await viewer.signaling.request(method, **params)
        # The errors changed nothing: still on layer 0, still decoding.
        stats = await viewer.signaling.request("getStats", room="prefer")
        consumer = next(c for c in stats["rooms"][0]["consumers"] if c["id"] == consumer_id)
        assert (consumer["spatial_layer"], consumer["target_spatial_layer"], consumer["width"]) == (0, 0, LOW[0])
        assert consumer["layer_switches"] == 1
        producer_stats = next(p for p in stats["rooms"][0]["producers"] if p["id"] == producer["id"])
        assert [layer["rid"] for layer in producer_stats["layers"]] == ["q", "h", "f"]
        assert [layer["width"] for layer in producer_stats["layers"]] == [160, 320, 640]
        assert all(layer["packets"] > 0 and layer["ssrc"] for layer in producer_stats["layers"])

        # A max size that fits the middle encoding moves it up to there.
        await viewer.signaling.request("setPreferredLayers", consumerId=consumer_id, spatialLayer=2)
        await viewer.signaling.request("setMaxSize", consumerId=consumer_id, width=300, height=170)
        await until(lambda: any((320, 180) in r.sizes for r in viewer.video()), 10)
    finally:
        await viewer.close()
        publisher.cancel()
        await asyncio.gather(publisher, return_exceptions=True)


async def test_a_constrained_subscriber_gets_a_lower_layer_without_loss_and_moves_up_when_the_limit_goes(
    server, simulcast_media
):
    """Publisher P; subscriber A unconstrained; subscriber B limited to 400 kb/s for LIFT_AT seconds."""
    # B's limit goes at lift_at; the layers have settled by `settled` (the initial probes may pass a 400 kb/s
    # shaper's burst allowance and put B on the top layer until the queue they built shows as over-use).
    lift_at, settled = 10.0, 6.0
    config = BotsConfig(
        url=server.url, room="fit", count=3, publishers=1, simulcast=True, media=simulcast_media,
        duration=lift_at + 15 + 2, seed=11, decode=True, ramp=10,
    )
    limited = ImpairmentConfig(bandwidth_kbps=400)
    plans = [
        BotPlan(0, "pub", "fit", publish=True, subscribe=False, start_offset=0.0, impaired=False),
        BotPlan(1, "a", "fit", publish=False, subscribe=True, start_offset=0.5, impaired=False),
        BotPlan(
            2, "b", "fit", publish=False, subscribe=True, start_offset=0.5, impaired=True,
            network=(ImpairmentStep(0.0, limited), ImpairmentStep(lift_at, ImpairmentConfig())),
        ),
    ]
    collector = Collector(wants_streams=True)
    stop = asyncio.Event()
    run = asyncio.create_task(run_bots(config, collector, plans=plans, stop=stop))
    try:  # the run stops 2 s after B's layer went up without the limit
        while not run.done():
            await asyncio.sleep(0.2)
            layers = [
                c.current_layer for t in list(server.worker.transports) for c in list(t.consumers.values())
                if c.kind == "video" and c.peer.name == "b"
            ]
            if collector.starts and time.monotonic() - collector.starts[0] > lift_at and layers and layers[0]:
                await asyncio.sleep(2.0)
                stop.set()
    finally:
        report = await run
    samples, started = collector.rows, collector.starts
    assert report.failed == 0
    by_name = {bot["name"]: bot for bot in report.bots}
    a_video = next(c for c in by_name["a"]["consumers"] if c["kind"] == "video")
    b_video = next(c for c in by_name["b"]["consumers"] if c["kind"] == "video")

    def size_at(consumer: dict, at: float) -> tuple[int, int] | None:
        sizes = [(w, h) for since, w, h in consumer["sizes"] if since <= at]
        return sizes[-1] if sizes else None

    # Once settled A has the top encoding and B a lower one, until B's limit goes; no upgrade trial while limited.
    for at in (settled, lift_at - 1):
        assert size_at(a_video, at) == TOP, a_video["sizes"]
        assert size_at(b_video, at) not in (None, TOP), b_video["sizes"]
    assert not [w for since, w, _ in b_video["sizes"] if settled <= since <= lift_at and w != LOW[0]], b_video["sizes"]
    # B's video and audio lose under 1% after NACK recovery meanwhile, and B's video does not freeze.
    window = (started[0] + settled, started[0] + lift_at)
    b_index = by_name["b"]["index"]
    for kind in ("video", "audio"):
        rows = [r for at, s in samples if window[0] <= at <= window[1] for r in s.consumers if r.bot == b_index and r.kind == kind]
        expected, lost = sum(r.expected for r in rows), sum(r.lost for r in rows)
        assert expected > 0 and lost / expected < 0.01, (kind, lost, expected, b_video["sizes"], b_video["freeze_log"])
    assert not [f for f in b_video["freeze_log"] if settled <= f[0] <= lift_at], b_video["freeze_log"]
    # Without the limit, B moves up within 15 s.
    assert any(lift_at < since <= lift_at + 15 and (w, h) != LOW for since, w, h in b_video["sizes"]), b_video["sizes"]
    # Decoding across every switch: no decode error.
    for consumer in (a_video, b_video):
        assert consumer["decode"]["decode_errors"] == 0 and consumer["decode"]["decoded_frames"] > 100, consumer["decode"]
