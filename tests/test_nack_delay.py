"""The delay from a NACK to its retransmission, and from a gap to its NACK, through real server objects.

A Worker with a publisher Transport (Producer) and a subscriber Transport (Consumer); RTCP enters where the
Connection hands it up (its on_rtcp callback) and what the subscriber transport sends is recorded before SRTP.
The delay is counted in worker ticks: a NACK is answered before its datagram's callback returns (zero ticks), a
gap is NACKed by the first tick after it (one tick at most, TICK_INTERVAL).
"""

from __future__ import annotations

import types

import pytest

from sfuctl.rtc import rtcp
from sfuctl.rtc.batching import TICK_INTERVAL
from sfuctl.rtc.rtp import build_packet, read_header
from sfuctl.rtc.sdp import VIDEO_FEEDBACK, Codec
from sfuctl.server.config import ServerConfig
from sfuctl.server.consumer import Consumer
from sfuctl.server.producer import Producer
from sfuctl.server.transport import Transport
from sfuctl.server.worker import Worker

VP8 = Codec("VP8", 90000, 96, feedback=VIDEO_FEEDBACK)
KEYFRAME = bytes([0x10, 0x00, 0x9D, 0x01, 0x2A]) + bytes(40)
PUBLISHER_SSRC = 0x5151


class Recorder:
    """Stands in for a Connection's send side."""

    def __init__(self, connection) -> None:
        self.rtp: list[bytes] = []
        self.rtcp: list[bytes] = []
        self.on_rtcp = connection.on_rtcp  # what the real connection hands RTCP to

    def send_rtp(self, packet: bytes) -> None:
        self.rtp.append(packet)

    def send_rtcp(self, packet: bytes) -> None:
        self.rtcp.append(packet)


def pair():
    worker = Worker(ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0)))
    publisher = Transport(id="t-pub", worker=worker, cname="pub", on_closed=lambda t, s: None)
    subscriber = Transport(id="t-sub", worker=worker, cname="sub", on_closed=lambda t, s: None)
    for transport in (publisher, subscriber):
        transport.connection = Recorder(transport.connection)  # type: ignore[assignment]
        transport.connected = True
    peer = types.SimpleNamespace(id="peer-1", name="one", cname="one")
    producer = Producer(id="p", peer=peer, transport=publisher, kind="video", codec=VP8, ssrc=PUBLISHER_SSRC, mid="0")
    publisher.add_producer(producer, None)
    consumer = Consumer(id="c", peer=peer, producer=producer, transport=subscriber, codec=VP8, mid="0", extensions={})
    producer.add_consumer(consumer)
    subscriber.add_consumer(consumer)
    return worker, producer, consumer, publisher, subscriber


async def test_a_nack_is_retransmitted_before_its_datagram_is_done_with() -> None:
    _, producer, consumer, _, subscriber = pair()
    for sequence in range(100, 110):
        producer.receive(build_packet(96, sequence, sequence * 3000, PUBLISHER_SSRC, KEYFRAME), 0.0)
    sent = subscriber.connection.rtp
    forwarded = {read_header(p)[2]: p for p in sent}
    wanted = sorted(forwarded)[2:5]
    before = len(sent)
    subscriber.connection.on_rtcp(bytes(rtcp.Nack(0x77, consumer.ssrc, wanted)))  # no tick runs in between
    retransmitted = sent[before:]
    assert [read_header(p)[2] for p in retransmitted] == wanted
    assert retransmitted == [forwarded[s] for s in wanted]  # the same bytes the subscriber missed
    assert consumer.stats()["retransmitted"] == 3 and consumer.stats()["nack_count"] == 1


@pytest.mark.parametrize("phase", [0.0, 0.4, 0.99])
async def test_a_gap_is_nacked_by_the_first_tick_after_it(phase: float) -> None:
    """Ticks run at k * TICK_INTERVAL; the gap shows `phase` of an interval after tick 10."""
    gap_at = (10 + phase) * TICK_INTERVAL
    worker, producer, _, publisher, _ = pair()
    for sequence in (1, 2, 5):
        producer.receive(build_packet(96, sequence, sequence * 3000, PUBLISHER_SSRC, KEYFRAME), gap_at)
    nacks: list[rtcp.Nack] = []
    ticks = 0
    while not nacks and ticks < 10:
        ticks += 1
        worker.tick((11 + ticks - 1) * TICK_INTERVAL, report=False)
        nacks = [p for p in (rtcp.parse_compound(d)[0] for d in publisher.connection.rtcp) if isinstance(p, rtcp.Nack)]
    assert ticks == 1  # the NACK waits for the next tick and no longer
    assert [(n.media_ssrc, n.lost) for n in nacks] == [(PUBLISHER_SSRC, [3, 4])]


async def test_the_worker_ticks_a_producer_only_while_it_has_feedback_pending() -> None:
    worker, producer, consumer, publisher, _ = pair()
    assert producer in worker._feedback  # the new video consumer waits for a keyframe: retries are due
    producer.receive(build_packet(96, 1, 3000, PUBLISHER_SSRC, KEYFRAME), 0.0)
    worker.tick(TICK_INTERVAL, report=False)
    assert not consumer.waiting_keyframe and producer not in worker._feedback
    producer.receive(build_packet(96, 4, 12000, PUBLISHER_SSRC, KEYFRAME), 0.03)  # 2 and 3 missing
    assert producer in worker._feedback
    worker.tick(2 * TICK_INTERVAL, report=False)
    for sequence in (2, 3):  # the retransmissions arrive
        producer.receive(build_packet(96, sequence, sequence * 3000, PUBLISHER_SSRC, KEYFRAME), 0.05)
    worker.tick(3 * TICK_INTERVAL, report=False)
    assert producer not in worker._feedback
    nacks = [p for p in (rtcp.parse_compound(d)[0] for d in publisher.connection.rtcp) if isinstance(p, rtcp.Nack)]
    assert [n.lost for n in nacks] == [[2, 3]]
