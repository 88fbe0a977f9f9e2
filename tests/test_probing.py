"""Probing: the Prober's padding-only packets, media joining a cluster, and the FeedbackEstimate's probes before
upgrades (virtual time where it can be; the Prober paces on a real event loop)."""

from __future__ import annotations

import asyncio
import re

import pytest

from sfuctl.bots.impairment import ImpairmentConfig, LinkModel
from sfuctl.client.offer import parse_answer
from sfuctl.rtc.bandwidth_estimator import BandwidthEstimator
from sfuctl.rtc.probe_controller import FURTHER_PROBE_MAX_BPS, PROBE_PACKET_SIZE, ProbeCluster, ProbeController
from sfuctl.rtc.prober import PADDING, Prober
from sfuctl.rtc.rtp import read_header
from sfuctl.rtc.sdp import Codec, parse_offer
from sfuctl.rtc.send_history import PacketResult, SendHistory
from sfuctl.rtc.transport_feedback import TRANSPORT_CC_URI, TransportFeedback, packet_sequence
from sfuctl.server.config import ServerConfig
from sfuctl.server.consumer import Consumer
from sfuctl.server.feedback_estimate import PROBE_HEADROOM, PROBE_INTERVAL, PROBE_INTERVAL_MAX, FeedbackEstimate
from sfuctl.server.producer import Producer
from sfuctl.server.transport import Transport
from sfuctl.server.worker import Worker

from .test_sdp_offers import captured, publishing_peer


async def test_a_cluster_goes_as_padding_only_packets_paced_at_its_rate() -> None:
    history = SendHistory()
    sent: list[tuple[float, bytes]] = []
    loop = asyncio.get_running_loop()
    prober = Prober(96, 3, history, lambda packet: sent.append((loop.time(), packet)), ssrc=1234)
    history.add(1200, 0.0)  # a media packet before: sequence 0
    prober.send([ProbeCluster(7, 400_000, 5000, 5)])  # 5000 bytes at 400 kb/s: ~100 ms
    await asyncio.sleep(0.3)
    assert len(sent) == -(-5000 // (12 + 8 + PADDING)) == prober.packets_sent
    assert 0.07 < sent[-1][0] - sent[0][0] < 0.2  # paced, not a burst
    for index, (_, packet) in enumerate(sent):
        marker, payload_type, _, _, ssrc, offset = read_header(packet)
        assert (payload_type, ssrc, packet[0] & 0x20) == (96, 1234, 0x20)  # padding bit set
        assert packet[-1] == PADDING == len(packet) - offset  # nothing but padding
        assert packet_sequence(packet, 3) == index + 1  # the transport's next sequences, after the media's
    prober.close()


def test_media_between_two_probe_packets_joins_the_cluster() -> None:
    history = SendHistory()
    history.add_probe(275, 1.0, 4)  # 0
    history.add(1200, 1.001)  # 1: media
    history.add_probe(275, 1.002, 4)  # 2
    history.join_cluster(1, 2, 4)
    history.add(1200, 1.003)  # 3: after the cluster
    results = history.on_feedback(TransportFeedback(1, 2, 0, 0, 0, [4, 8, 12, 16]), 1.1)
    assert [r.cluster for r in results] == [4, 4, 4, -1]


class Sent:
    def __init__(self) -> None:
        self.clusters: list[ProbeCluster] = []

    def __call__(self, clusters: list[ProbeCluster]) -> None:
        self.clusters += clusters


def test_upgrade_probes_aim_above_the_target_and_back_off_when_they_fall_short() -> None:
    estimator = BandwidthEstimator()  # 300 kb/s, nothing measured yet
    sent = Sent()
    estimate = FeedbackEstimate(estimator, sent)
    assert estimate.available_bps(10.0) == 300_000 and estimate.wants_probe(10.0)
    estimate.start_probe(600_000, 10.0)  # no media measured: padding at the target with headroom
    assert [c.bitrate_bps for c in sent.clusters] == [600_000 * PROBE_HEADROOM] and estimate.probes_requested == 1
    assert not estimate.wants_probe(11.0)
    times = [10.0]
    now = 10.0
    while now < 50.0:  # no result ever lifts the estimate: each probe fell short, the waits double up to the max
        now += 0.5
        if estimate.wants_probe(now):
            estimate.start_probe(600_000, now)
            times.append(now)
    waits = [b - a for a, b in zip(times, times[1:])]
    assert waits[:3] == [2 * PROBE_INTERVAL, 4 * PROBE_INTERVAL, PROBE_INTERVAL_MAX]
    assert set(waits[3:]) == {PROBE_INTERVAL_MAX}


def test_a_probe_whose_result_reached_its_target_counts_even_when_over_use_lowered_the_estimate_since() -> None:
    estimator = BandwidthEstimator()
    estimate = FeedbackEstimate(estimator, Sent())
    estimate.start_probe(600_000, 10.0)
    estimator.probe.results += 1  # the cluster's feedback: a result at the target ...
    estimator.last_probe_bps = 700_000
    estimator.delay_bps = 400_000  # ... then the queue it built showed as over-use
    assert not estimate.wants_probe(11.5) and estimate.wants_probe(10.0 + PROBE_INTERVAL)  # no back-off


def test_no_probe_while_over_using_and_none_for_what_already_fits() -> None:
    estimator = BandwidthEstimator()
    sent = Sent()
    estimate = FeedbackEstimate(estimator, sent)
    estimate.start_probe(200_000, 10.0)  # fits the 300 kb/s start
    estimator.state = "overusing"
    estimate.start_probe(900_000, 10.0)
    assert sent.clusters == [] and estimate.probes_requested == 0
    estimate.on_remb(100_000, 0.0)  # REMB caps it
    assert estimate.available_bps(0.0) == 100_000


def test_further_probing_makes_one_cluster_per_step_and_stops_at_its_ceiling() -> None:
    probe = ProbeController(300_000, 20_000_000)
    assert [c.bitrate_bps for c in probe.due(300_000, 0.0)] == [900_000, 1_800_000]
    # The estimate jumps far up (a loopback path): one cluster at the ceiling, then nothing however often asked.
    made = [c.bitrate_bps for tick in range(1, 100) for c in probe.due(19_000_000, tick * 0.02)]
    assert made == [FURTHER_PROBE_MAX_BPS]


def cluster_through_shaper(stall: float, burst_used: bool = True) -> tuple[ProbeController, list[PacketResult]]:
    """A probe before an upgrade at 700 kb/s through the bots' shaper at 400 kb/s, its burst allowance used up
    by media just before or not; the receiver is busy for the first `stall` seconds of the cluster and then reads
    what queued meanwhile at once."""
    probe = ProbeController(300_000, 10_000_000)
    probe.due(300_000, 0.0)  # the initial clusters, out of the way
    (cluster,) = probe.request(700_000, 10.0)
    link = LinkModel(ImpairmentConfig(bandwidth_kbps=400), "probe")
    for index in range(3 if burst_used else 0):
        link.admit(1000, 9.99 + index * 0.001)
    interval = PROBE_PACKET_SIZE * 8 / cluster.bitrate_bps
    results = []
    for index in range(cluster.packets):
        sent = 10.0 + index * interval
        arrival = max(link.admit(PROBE_PACKET_SIZE, sent), 10.0 + stall)
        results.append(PacketResult(sent, arrival, PROBE_PACKET_SIZE, cluster.id))
    return probe, results


@pytest.mark.parametrize("stall", [0.0, 0.02, 0.04, 0.06, 0.08])
def test_arrivals_squeezed_by_a_busy_receiver_do_not_make_a_probe_look_faster_than_the_link(stall: float) -> None:
    probe, results = cluster_through_shaper(stall)
    rate = probe.on_results(results)
    # 95% of what the link took (its rate and the little left of its burst allowance): within 5% of its rate.
    assert rate is not None and rate <= 1.05 * 400_000, rate


def test_a_probe_through_a_full_burst_allowance_shows_the_link_rate() -> None:
    probe, results = cluster_through_shaper(0.0, burst_used=False)
    rate = probe.on_results(results)
    # 95% of what the link took (its rate and the little left of its burst allowance): within 5% of its rate.
    assert rate is not None and rate <= 1.05 * 400_000, rate


def test_a_cluster_is_judged_only_once_most_of_it_was_reported() -> None:
    probe, results = cluster_through_shaper(0.0)
    # The first feedback reports its first 15 ms with two media packets sent meanwhile: 80% of the cluster's
    # padding bytes, but not of its packets or its duration.
    media = [PacketResult(10.004 + i * 0.005, 10.005 + i * 0.005, 1200, results[0].cluster) for i in range(2)]
    first = [r for r in results if r.send_time < 10.015]
    assert probe.on_results(first + media) is None
    assert probe.on_results([r for r in results if r.send_time >= 10.015]) is not None


async def test_probes_take_a_video_payload_type_when_an_audio_consumer_came_first() -> None:
    worker = Worker(ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0)))
    publisher = Transport(id="t-pub", worker=worker, cname="pub", on_closed=lambda t, s: None)
    subscriber = Transport(id="t-sub", worker=worker, cname="sub", on_closed=lambda t, s: None)
    opus, vp8 = Codec("opus", 48000, 111, 2), Codec("VP8", 90000, 96)
    expected = [111, 96, 96]  # Opus until a video consumer comes, then VP8 (another audio one changes nothing)
    for index, codec in enumerate((opus, vp8, opus)):
        kind = "video" if codec is vp8 else "audio"
        producer = Producer(
            id=f"p-{index}", peer=None, transport=publisher, kind=kind, codec=codec, ssrc=index + 1, mid=str(index)
        )
        Consumer(
            id=f"c-{index}", peer=None, producer=producer, transport=subscriber, codec=codec, mid=str(index),
            extensions={TRANSPORT_CC_URI: 5},
        )
        assert subscriber.prober is not None and subscriber.prober.payload_type == expected[index]
    for transport in (publisher, subscriber):
        transport.close()


def answered_ssrcs(answer: str) -> dict[str, list[int]]:
    """The a=ssrc values of each m-line of an answer, in order, by mid."""
    found = {}
    for section in answer.split("\r\nm=")[1:]:
        mid = re.search(r"\r\na=mid:(\S+)", section).group(1)
        found[mid] = [int(ssrc) for ssrc in re.findall(r"\r\na=ssrc:(\d+) ", section)]
    return found


@pytest.mark.parametrize("subscribed", [("0", "1"), ("1",)])
async def test_the_receive_answer_announces_the_probe_ssrc_after_a_video_consumers_own(server, subscribed) -> None:
    """Chromium's receive offer (transport-cc on both m-lines): the video m-line lists its consumer's SSRC, then the
    probe SSRC the prober stamps; an audio m-line never lists it (probes are announced only beside video)."""
    publisher = publishing_peer(server, "announce")
    subscriber = publishing_peer(server, "announce")
    try:
        producers = {p["mid"]: p for p in publisher.publish(captured("chromium-send"))["producers"]}
        by_kind = {p["kind"]: p["id"] for p in producers.values()}
        offer = captured("chromium-recv")  # mid 0 receives video, mid 1 audio
        wanted = {mid: by_kind["video" if mid == "0" else "audio"] for mid in subscribed}
        for _ in range(2):  # a renegotiation announces the same probe SSRC
            result = subscriber.subscribe(offer, wanted)
            ssrcs = answered_ssrcs(result["sdp"])
            consumers = {c["mid"]: c["ssrc"] for c in result["consumers"]}
            prober = subscriber.recv_transport.prober
            assert prober is not None and result["probeSsrc"] == prober.ssrc
            expected = {mid: [consumers[mid]] for mid in subscribed}
            if "0" in subscribed:
                expected["0"].append(prober.ssrc)
            assert {mid: found for mid, found in ssrcs.items() if found} == expected
            # A client's parser takes the first SSRC of an m-line as its stream, a further one as the probes'.
            answer = parse_answer(result["sdp"])
            assert {mid: m.ssrc for mid, m in answer.media.items() if m.ssrc} == consumers
            assert answer.probe_ssrc == (prober.ssrc if "0" in subscribed else None)
    finally:
        subscriber.close()
        publisher.close()


@pytest.mark.parametrize("name", ["gst-max-bundle-recv", "aiortc-recv"])
async def test_a_receive_offer_without_the_transport_cc_extension_gets_no_probe_ssrc(server, name: str) -> None:
    """webrtcbin (rtcp-fb transport-cc but no header extension) and aiortc (neither): no probes, none announced."""
    publisher = publishing_peer(server, "no-probes")
    subscriber = publishing_peer(server, "no-probes")
    try:
        video = next(p["id"] for p in publisher.publish(captured("chromium-send"))["producers"] if p["kind"] == "video")
        offer = parse_offer(captured(name))
        mid = next(m.mid for m in offer.media if m.kind == "video")
        result = subscriber.subscribe(captured(name), {mid: video})
        assert result["probeSsrc"] is None
        assert answered_ssrcs(result["sdp"])[mid] == [result["consumers"][0]["ssrc"]]
    finally:
        subscriber.close()
        publisher.close()
