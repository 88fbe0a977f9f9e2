"""Link: one bot connection with its publisher and/or subscriber sharing one RTCP router (no network: the
connection's send side is recorded)."""

from __future__ import annotations

import random

import pytest

from sfuctl.bots.link import Link
from sfuctl.bots.publisher import Publisher, StreamSender
from sfuctl.bots.subscriber import ConsumerInfo, ConsumerStream, Subscriber
from sfuctl.encoded import EncodedFrame, EncodedTrack
from sfuctl.rtc import rtcp
from sfuctl.rtc.rtp import build_packet, read_header

SENT_SSRC = 0x51
RECEIVED_SSRC = 0x77


class RecordingConnection:
    def __init__(self) -> None:
        self.state = "connected"
        self.rtp: list[bytes] = []
        self.rtcp: list[bytes] = []

    def send_rtp(self, packet: bytes) -> None:
        self.rtp.append(packet)

    def send_rtcp(self, packet: bytes) -> None:
        self.rtcp.append(packet)

    def close(self) -> None:
        self.state = "closed"


def track() -> EncodedTrack:
    frame = EncodedFrame((bytes([0x90, 0x80, 0x80, 0x00]) + b"k" * 10,), 3000, True)
    return EncodedTrack("video", "VP8", 90000, [frame], 1 / 30, 100_000)


def make_link(sends: bool, receives: bool) -> tuple[Link, RecordingConnection]:
    link = Link("link-1")
    connection = RecordingConnection()
    link.connection = connection  # type: ignore[assignment]
    if sends:
        sender = StreamSender(track(), ssrc=SENT_SSRC, payload_type=96, send_rtp=connection.send_rtp,
                              rng=random.Random(1), nack=True)
        link.publisher = Publisher([sender], link.send_rtcp, "me", link.router)
    if receives:
        link.subscriber = Subscriber(link.send_rtcp, "me", 0x99, lambda: 5.0, link.router)
        info = ConsumerInfo("c", "p", "peer", "them", "video", "VP8", "0", RECEIVED_SSRC, 90000, True)
        link.subscriber.add(ConsumerStream(info, 0.0))
    return link, connection


@pytest.mark.parametrize(
    ("sends", "receives", "report_types"),
    [
        pytest.param(True, False, [[rtcp.SenderReport, rtcp.Sdes]], id="send-only"),
        pytest.param(False, True, [[rtcp.ReceiverReport, rtcp.Sdes]], id="receive-only"),
        pytest.param(True, True, [[rtcp.SenderReport, rtcp.Sdes], [rtcp.ReceiverReport, rtcp.Sdes]], id="both"),
    ],
)
def test_a_link_reports_what_it_sends_then_what_it_receives(sends: bool, receives: bool, report_types) -> None:
    link, connection = make_link(sends, receives)
    if sends:
        link.publisher.senders[0].send_frame(1.0)  # type: ignore[union-attr]
    if receives:
        link.on_rtp(build_packet(96, 1, 0, RECEIVED_SSRC, bytes([0x10, 0, 0x9D, 1, 0x2A])))
    link.send_reports(2.0)
    assert [[type(p) for p in rtcp.parse_compound(d)] for d in connection.rtcp] == report_types


def test_one_router_feeds_both_sides_from_one_parse_and_counts_the_rest() -> None:
    link, connection = make_link(True, True)
    sender = link.publisher.senders[0]  # type: ignore[union-attr]
    sender.send_frame(1.0)
    sequence = read_header(connection.rtp[0])[2]
    sr = rtcp.SenderReport(RECEIVED_SSRC, rtcp.ntp_from_unix(1000.0), 0, 1, 10, [rtcp.ReportBlock(SENT_SSRC, 0, 0, 1, 0, 0, 0)])
    link.router.route(bytes(sr) + bytes(rtcp.Nack(7, SENT_SSRC, [sequence])) + bytes(rtcp.Pli(7, 0xDEAD)))
    assert connection.rtp[1] == connection.rtp[0]  # retransmitted at once
    assert (sender.nacks, sender.rtcp.reports_received, link.router.unclaimed) == (1, 1, 1)
    stream = link.subscriber.streams[0]  # type: ignore[union-attr]
    stream.receive(build_packet(96, 1, 0, RECEIVED_SSRC, b"x"), 5.0)
    assert stream.rtcp.report_block(5.0).lsr == rtcp.ntp_middle(rtcp.ntp_from_unix(1000.0))


@pytest.mark.parametrize(("state", "byes"), [("connected", 1), ("failed", 0)])
def test_stop_sending_says_bye_only_on_a_live_connection(state: str, byes: int) -> None:
    link, connection = make_link(True, False)
    connection.state = state
    link.stop_sending()
    assert not link.publisher.senders[0].active  # type: ignore[union-attr]
    sent = [p for d in connection.rtcp for p in rtcp.parse_compound(d)]
    assert sum(isinstance(p, rtcp.Bye) for p in sent) == byes
    link.close()
    assert link.closed and connection.state == "closed"
