"""RtcpRouter: one parse per datagram, each part to the stream owning its SSRC, what nobody claims counted."""

from __future__ import annotations

import pytest

from sfuctl.rtc import rtcp
from sfuctl.rtc.rtcp_router import RtcpRouter, receiver_reports

OURS_SENT = 0x1111  # a stream we send (feedback about it comes in)
OURS_RECEIVED = 0x2222  # a stream we receive (its sender's SRs come in)
STRANGER = 0x9999


class Recorder:
    """Both stream protocols; records every call in order."""

    def __init__(self, calls: list[tuple]) -> None:
        self.calls = calls

    def on_sender_report(self, report: rtcp.SenderReport, now: float) -> None:
        self.calls.append(("sr", report.ssrc, now))

    def on_nack(self, lost: list[int]) -> None:
        self.calls.append(("nack", lost))

    def on_keyframe_request(self, now: float, fir: bool) -> None:
        self.calls.append(("fir" if fir else "pli", now))

    def on_report_block(self, block: rtcp.ReportBlock, arrival_ntp_middle: int) -> None:
        self.calls.append(("block", block.ssrc, block.packets_lost))


def block(ssrc: int, lost: int = 0) -> rtcp.ReportBlock:
    return rtcp.ReportBlock(ssrc, 0, lost, 100, 0, 0, 0)


SR_OF_THEIRS = rtcp.SenderReport(OURS_RECEIVED, rtcp.ntp_from_unix(1000.0), 0, 1, 1, [block(OURS_SENT, 3)])
SDES = rtcp.Sdes(5, "them")

CASES = [
    pytest.param(
        bytes(rtcp.ReceiverReport(5, [block(OURS_SENT, 2), block(STRANGER)])) + bytes(SDES),
        [("block", OURS_SENT, 2)], 1, id="rr-one-block-claimed-one-not",
    ),
    pytest.param(
        bytes(SR_OF_THEIRS) + bytes(SDES),
        [("sr", OURS_RECEIVED, 7.0), ("block", OURS_SENT, 3)], 0, id="sr-about-theirs-with-a-block-about-ours",
    ),
    pytest.param(
        bytes(rtcp.Nack(5, OURS_SENT, [10, 11, 40])) + bytes(rtcp.Pli(5, OURS_SENT)) + bytes(rtcp.Fir(5, [(OURS_SENT, 1), (STRANGER, 1)])),
        [("nack", [10, 11, 40]), ("pli", 7.0), ("fir", 7.0)], 1, id="nack-pli-fir-in-order",
    ),
    pytest.param(
        bytes(rtcp.Nack(5, STRANGER, [1])) + bytes(rtcp.Pli(5, STRANGER)) + bytes(rtcp.SenderReport(STRANGER, 0, 0, 0, 0)),
        [], 3, id="all-for-unknown-ssrcs",
    ),
    pytest.param(
        bytes(rtcp.ReceiverReport(5)) + bytes(rtcp.Bye([OURS_RECEIVED])) + bytes(rtcp.Remb(5, 300_000, [OURS_SENT])),
        [], 0, id="bye-and-remb-are-left",
    ),
    pytest.param(bytes.fromhex("81cf0001" "00000000") + bytes(rtcp.Pli(5, OURS_SENT)), [("pli", 7.0)], 0, id="unknown-type-skipped"),
]


@pytest.mark.parametrize(("data", "calls", "unclaimed"), CASES)
def test_each_part_goes_to_the_stream_owning_its_ssrc(data: bytes, calls: list[tuple], unclaimed: int) -> None:
    seen: list[tuple] = []
    router = RtcpRouter(clock=lambda: 7.0)
    stream = Recorder(seen)
    router.add_sending(OURS_SENT, stream)
    router.add_receiving(OURS_RECEIVED, stream)
    router.route(data)
    assert seen == calls
    assert (router.unclaimed, router.invalid) == (unclaimed, 0)


MALFORMED = [
    pytest.param(b"", id="empty-is-nothing"),  # an empty datagram parses to no packets: neither invalid nor routed
    pytest.param(b"\x80", id="one-byte"),
    pytest.param(b"\x80\xc9\x00", id="header-cut"),
    pytest.param(bytes(rtcp.Pli(5, OURS_SENT))[:-1], id="pli-truncated"),
    pytest.param(bytes(rtcp.Nack(5, OURS_SENT, [1]))[:-2], id="nack-truncated-fci"),
    pytest.param(bytes.fromhex("81cd0003" "00000005" "00001111" "0001"), id="nack-length-over-data"),
    pytest.param(bytes.fromhex("41c90001" "00000005"), id="version-1"),
    pytest.param(bytes.fromhex("81c90001" "00000005"), id="rr-count-over-length"),
    pytest.param(bytes.fromhex("80c80001" "00001111"), id="sr-too-short"),
    pytest.param(bytes(rtcp.Pli(5, OURS_SENT)) + b"\x80\xc9", id="valid-then-truncated"),
    pytest.param(bytes.fromhex("a0c90001" "00000009"), id="padding-over-packet"),
]


@pytest.mark.parametrize("data", MALFORMED)
def test_a_malformed_datagram_is_counted_and_delivers_nothing(data: bytes) -> None:
    seen: list[tuple] = []
    router = RtcpRouter(clock=lambda: 0.0)
    router.add_sending(OURS_SENT, Recorder(seen))
    router.route(data)
    assert seen == []
    assert router.invalid == (0 if data == b"" else 1)


def test_a_removed_stream_is_no_longer_routed_and_removal_checks_identity() -> None:
    seen: list[tuple] = []
    router = RtcpRouter(clock=lambda: 0.0)
    first, second = Recorder(seen), Recorder(seen)
    router.add_sending(OURS_SENT, first)
    router.remove_sending(OURS_SENT, second)  # not the registered one: nothing changes
    router.route(bytes(rtcp.Pli(5, OURS_SENT)))
    router.remove_sending(OURS_SENT, first)
    router.route(bytes(rtcp.Pli(5, OURS_SENT)))
    assert seen == [("pli", 0.0)] and router.unclaimed == 1


@pytest.mark.parametrize(("blocks", "sizes"), [(0, []), (1, [1]), (31, [31]), (32, [31, 1]), (70, [31, 31, 8])])
def test_receiver_reports_carry_at_most_31_blocks_each_with_sdes(blocks: int, sizes: list[int]) -> None:
    sdes = bytes(rtcp.Sdes(5, "me"))
    packets = receiver_reports(5, [block(i) for i in range(blocks)], sdes)
    parsed = [rtcp.parse_compound(p) for p in packets]
    assert [len(rr.reports) for rr, _ in parsed] == sizes
    assert all(isinstance(rr, rtcp.ReceiverReport) and s == rtcp.Sdes(5, "me", [(5, "me")]) for rr, s in parsed)
    assert [b.ssrc for rr, _ in parsed for b in rr.reports] == list(range(blocks))
