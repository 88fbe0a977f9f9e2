"""ResendBudget and SendStream.on_nack: how much a NACK may make a stream retransmit (deterministic clock)."""

from __future__ import annotations

from sfuctl.rtc.resend_budget import DEFAULT_RTT, MIN_RESEND_INTERVAL, RESEND_RATIO, ResendBudget
from sfuctl.rtc.send_stream import SendStream

PACKET = 1200


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Stream:
    """A sender of 1200-byte packets with a 1024-packet buffer, counting media and retransmitted bytes."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.media = 0
        self.sequence = 0
        self.sent: list[int] = []
        self.buffer: dict[int, bytes] = {}
        self.rtcp = SendStream(
            1, 90000, send_rtp=self._send, lookup=self.buffer.get, on_keyframe_request=lambda now: None,
            media_bytes=lambda: self.media, clock=self.clock,
        )

    def send_media(self, count: int, seconds: float) -> None:
        """`count` packets evenly over `seconds`, stored for retransmission."""
        for _ in range(count):
            self.buffer[self.sequence] = bytes(PACKET)
            self.sequence = (self.sequence + 1) & 0xFFFF
            if len(self.buffer) > 1024:
                del self.buffer[next(iter(self.buffer))]
            self.media += PACKET
            self.clock.now += seconds / count

    def _send(self, packet: bytes) -> None:
        self.sent.append(len(packet))


def test_a_packet_is_resent_at_most_once_per_rtt():
    stream = Stream()
    stream.send_media(100, 1.0)
    for _ in range(10):  # the same NACK ten times within 10 ms
        stream.rtcp.on_nack([5, 6, 7])
        stream.clock.now += 0.001
    assert len(stream.sent) == 3
    assert stream.rtcp.budget.refused_recent == 27
    stream.clock.now += DEFAULT_RTT  # no RTT known yet: the default window
    stream.rtcp.on_nack([5])
    assert len(stream.sent) == 4


def test_a_tiny_rtt_still_spaces_resends_by_a_tick():
    stream = Stream()
    stream.send_media(100, 1.0)
    stream.rtcp.rtt_ms = 0.2  # loopback
    stream.rtcp.on_nack([1])
    stream.clock.now += MIN_RESEND_INTERVAL / 2
    stream.rtcp.on_nack([1])
    stream.clock.now += MIN_RESEND_INTERVAL
    stream.rtcp.on_nack([1])
    assert len(stream.sent) == 2


def test_a_queue_on_the_path_spaces_resends_by_the_feedback_rtt():
    stream = Stream()
    stream.send_media(100, 1.0)
    stream.rtcp.rtt_ms = 50.0  # from receiver reports, older than the queue
    stream.rtcp.path_rtt = 0.6  # transport feedback: the previous copy may still be queued
    stream.rtcp.on_nack([1])
    stream.clock.now += 0.3
    stream.rtcp.on_nack([1])  # a duplicate the receiver would discard
    assert len(stream.sent) == 1
    stream.clock.now += 0.35
    stream.rtcp.on_nack([1])
    assert len(stream.sent) == 2


def test_a_nack_storm_costs_at_most_the_ratio_of_the_media():
    stream = Stream()
    stream.send_media(500, 1.0)  # 600 kB/s of media, then 576 kB/s
    for _ in range(200):  # 5 s of NACKs naming the whole buffer, 40 a second, while media goes on
        stream.rtcp.on_nack(list(range(stream.sequence - 1024, stream.sequence)))
        stream.send_media(12, 0.025)
    media = stream.media  # each second's cap follows the second before it: 6 s of media for 5 s of storm
    resent = sum(stream.sent)
    assert resent <= RESEND_RATIO * media
    assert resent >= RESEND_RATIO * media * 0.7
    assert stream.rtcp.budget.refused_budget > 0 and stream.rtcp.budget.refused_recent > 0
    assert stream.rtcp.retransmitted_bytes == resent


def test_real_loss_within_the_budget_is_all_repaired():
    stream = Stream()
    for second in range(3):
        stream.send_media(500, 1.0)
        lost = list(range(second * 500, second * 500 + 500, 10))  # 10% loss, each NACKed twice an RTT apart
        stream.rtcp.on_nack(lost)
        stream.clock.now += 0.05
        stream.rtcp.on_nack(lost)
    assert len(stream.sent) == 3 * 50  # once: the second NACK came within the RTT
    assert stream.rtcp.budget.refused_budget == 0


def test_without_media_bytes_only_the_rtt_rule_applies():
    budget = ResendBudget(None, now=0.0)
    assert all(budget.allow(s, 0.0, None) for s in range(5000))
