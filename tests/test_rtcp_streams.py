"""ReceiveStream and SendStream, the per-stream RTCP units both the server and the bots are built on."""

from __future__ import annotations

import pytest

from sfuctl.rtc import rtcp
from sfuctl.rtc.batching import KEYFRAME_MERGE_WINDOW, KEYFRAME_RETRY_INTERVAL, NACK_BATCH
from sfuctl.rtc.receive_stream import ReceiveStream
from sfuctl.rtc.send_stream import SendStream

ME = 0xABC  # our RTCP sender SSRC
MEDIA = 0x1234


def fed(sequences, nack: bool = True, **options) -> ReceiveStream:
    stream = ReceiveStream(MEDIA, 90000, nack=nack, **options)
    for sequence in sequences:
        stream.receive(sequence, sequence * 3000, sequence * 0.001)
    return stream


# -- ReceiveStream: NACKs -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sequences", "nack", "batches"),
    [
        pytest.param(range(10), True, [], id="no-gap"),
        pytest.param([1, 2, 5], True, [[3, 4]], id="one-gap"),
        pytest.param([0, NACK_BATCH + 1], True, [list(range(1, NACK_BATCH + 1))], id="exactly-one-batch"),
        pytest.param([0, 101], True, [list(range(1, 65)), list(range(65, 101))], id="two-batches"),
        pytest.param([65534, 2], True, [[65535, 0, 1]], id="across-the-wrap"),
        pytest.param([1, 2, 5], False, [], id="nack-not-negotiated"),
    ],
)
def test_due_nacks_go_out_in_batches(sequences, nack: bool, batches: list[list[int]]) -> None:
    stream = fed(sequences, nack)
    packets = [rtcp.Nack.parse(p) for p in stream.feedback(1.0, ME)]
    assert [p.lost for p in packets] == batches
    assert all((p.sender_ssrc, p.media_ssrc) == (ME, MEDIA) for p in packets)
    assert (stream.nacks_sent, stream.nacked_packets) == (len(batches), sum(map(len, batches)))


# -- ReceiveStream: keyframe requests --------------------------------------------------------------------
# Each step: (time, "request" | "tick" | "tick+want"), and what goes out then.
MERGE = KEYFRAME_MERGE_WINDOW
RETRY = KEYFRAME_RETRY_INTERVAL


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param([(0.0, "request", "pli"), (0.1, "tick", None)], id="first-request-at-once"),
        pytest.param(
            [(0.0, "request", "pli"), (0.2, "request", None), (MERGE - 0.01, "tick", None), (MERGE, "tick", "pli"),
             (MERGE + 0.02, "tick", None)],
            id="merged-into-one-at-the-window-end",
        ),
        pytest.param(
            [(0.0, "request", "pli"), (0.1, "request", None), (0.3, "request", None), (MERGE, "tick", "pli")],
            id="many-merged-into-one",
        ),
        pytest.param(
            [(0.0, "request", "pli"), (RETRY - 0.01, "tick+want", None), (RETRY, "tick+want", "pli"),
             (RETRY + 0.5, "tick+want", None), (2 * RETRY, "tick+want", "pli")],
            id="repeated-while-wanted",
        ),
        pytest.param([(0.0, "tick+want", "pli"), (0.5, "request", "pli")], id="a-retry-opens-a-window-too"),
    ],
)
def test_keyframe_requests_are_merged_and_repeated(steps) -> None:
    stream = ReceiveStream(MEDIA, 90000, nack=True)
    for now, action, expected in steps:
        if action == "request":
            out = [p for p in [stream.request_keyframe(now, ME)] if p is not None]
        else:
            out = stream.feedback(now, ME, want_keyframe=action == "tick+want")
        assert [type(p).__name__.lower() for p in map(lambda d: rtcp.parse_compound(d)[0], out)] == (
            [expected] if expected else []
        ), now
    assert stream.plis_sent == sum(1 for _, _, e in steps if e)


def test_fir_carries_an_increasing_sequence_number() -> None:
    stream = ReceiveStream(MEDIA, 90000, nack=False, fir=True)
    first = rtcp.Fir.parse(stream.request_keyframe(0.0, ME))
    second = rtcp.Fir.parse(stream.request_keyframe(1.0, ME))
    assert (first.sender_ssrc, first.entries, second.entries) == (ME, [(MEDIA, 1)], [(MEDIA, 2)])
    assert (stream.firs_sent, stream.plis_sent) == (2, 0)


def test_without_an_ssrc_nothing_is_requested_or_reported() -> None:
    stream = ReceiveStream(None, 90000, nack=True)
    assert stream.request_keyframe(0.0, ME) is None
    assert stream.feedback(2.0, ME, want_keyframe=True) == []
    stream.receive(1, 0, 0.0)
    assert stream.report_block(0.0) is None
    stream.ssrc = MEDIA
    assert stream.report_block(0.0).ssrc == MEDIA


def test_report_block_carries_the_lsr_and_delay_of_the_last_sender_report() -> None:
    stream = fed([1, 2, 4])
    assert stream.report_block(0.0).lsr == 0
    ntp = rtcp.ntp_from_unix(1000.25)
    stream.on_sender_report(rtcp.SenderReport(MEDIA, ntp, 777, 3, 300), 10.0)
    block = stream.report_block(10.5)
    assert (block.ssrc, block.lsr, block.dlsr, block.packets_lost) == (MEDIA, rtcp.ntp_middle(ntp), 32768, 1)
    assert stream.last_sender_report == (ntp, 777, 10.0)


# -- SendStream --------------------------------------------------------------------------------------------
class Owner:
    def __init__(self, stored: dict[int, bytes]) -> None:
        self.stored = stored
        self.sent: list[bytes] = []
        self.keyframe_requests: list[float] = []
        self.reports: list[rtcp.ReportBlock] = []

    def stream(self, resend: bool = True) -> SendStream:
        return SendStream(
            MEDIA, 90000, send_rtp=self.sent.append, lookup=self.stored.get if resend else None,
            on_keyframe_request=self.keyframe_requests.append, on_report=self.reports.append,
        )


@pytest.mark.parametrize(
    ("stored", "resend", "lost", "sent"),
    [
        pytest.param({1: b"a", 2: b"b"}, True, [1, 2], [b"a", b"b"], id="all-available"),
        pytest.param({1: b"a"}, True, [5, 1, 6], [b"a"], id="some-gone"),
        pytest.param({1: b"a"}, False, [1], [], id="no-buffer-counts-the-nack-only"),
    ],
)
def test_a_nack_is_answered_at_once_from_what_is_still_available(stored, resend, lost, sent) -> None:
    owner = Owner(stored)
    stream = owner.stream(resend)
    stream.on_nack(lost)
    assert owner.sent == sent
    assert (stream.nacks_received, stream.retransmitted) == (1, len(sent))


@pytest.mark.parametrize(
    ("block", "fraction", "jitter_ms", "rtt"),
    [
        pytest.param(rtcp.ReportBlock(MEDIA, 64, 3, 10, 900, 0, 0), 0.25, 10.0, None, id="no-lsr-no-rtt"),
        pytest.param(rtcp.ReportBlock(MEDIA, 0, 0, 10, 0, 0x10000, 0x8000), 0.0, 0.0, 500.0, id="rtt-from-lsr-dlsr"),
    ],
)
def test_report_blocks_give_loss_jitter_and_rtt(block, fraction, jitter_ms, rtt) -> None:
    owner = Owner({})
    stream = owner.stream()
    stream.on_report_block(block, 0x10000 + 0x8000 + 0x8000)  # arrival = LSR + DLSR + 0.5 s
    assert (stream.fraction_lost, stream.packets_lost, stream.jitter_ms) == (fraction, block.packets_lost, jitter_ms)
    assert stream.rtt_ms == rtt and stream.reports_received == 1 and owner.reports == [block]


def test_keyframe_requests_are_counted_by_kind_and_passed_on() -> None:
    owner = Owner({})
    stream = owner.stream()
    stream.on_keyframe_request(1.0, False)
    stream.on_keyframe_request(2.0, True)
    assert (stream.plis_received, stream.firs_received, owner.keyframe_requests) == (1, 1, [1.0, 2.0])


def test_sender_report_wraps_its_counters() -> None:
    report = Owner({}).stream().sender_report(5, 2**32 + 7, 2**32 + 1, 2**33 + 2)
    assert bytes(report) == bytes(rtcp.SenderReport(MEDIA, 5, 7, 1, 2))


@pytest.mark.parametrize(
    ("sequences", "request_at", "calls", "pending"),
    [
        pytest.param([1, 2, 3], None, 0, False, id="in-order-nothing-due"),
        pytest.param([1, 2, 5], None, 1, True, id="a-gap"),
        pytest.param([1, 3, 5], None, 2, True, id="two-gaps"),
        pytest.param([1, 2, 3], 0.1, 1, True, id="a-merged-keyframe-request"),
    ],
)
def test_on_due_says_when_feedback_may_come_due(sequences, request_at, calls: int, pending: bool) -> None:
    due: list[None] = []
    stream = ReceiveStream(MEDIA, 90000, nack=True, on_due=lambda: due.append(None))
    for sequence in sequences:
        stream.receive(sequence, sequence * 3000, 0.0)
    if request_at is not None:
        stream.request_keyframe(0.0, ME)  # sent at once: nothing pending
        stream.request_keyframe(request_at, ME)  # merged: pending until the window ends
    assert (len(due), stream.pending) == (calls, pending)
    stream.feedback(1.0, ME)
    if request_at is not None:
        assert not stream.pending
