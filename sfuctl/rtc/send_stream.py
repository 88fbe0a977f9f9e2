"""SendStream: the RTCP side of one RTP stream we send, the same unit on the server and in the bots.

It answers NACKs from what its owner can still resend, counts keyframe requests and passes them on, takes the
peer's report blocks about the stream (loss, jitter, RTT) and builds the stream's sender report.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from . import rtcp
from .resend_budget import ResendBudget


class SendStream:
    """Feedback about one outgoing SSRC.

    `lookup(sequence)` gives the packet to resend for a NACKed sequence number, or None (no lookup: nothing is
    ever resent); `send_rtp` sends it, within the ResendBudget (`media_bytes()`: the media bytes sent so far,
    retransmissions excluded, for its byte cap). `on_keyframe_request(now)` is the owner's reaction to a PLI or FIR;
    `on_report(block)`, if given, runs after each report block was taken.
    """

    __slots__ = (
        "ssrc", "clock_rate", "nacks_received", "plis_received", "firs_received", "retransmitted",
        "retransmitted_bytes", "reports_received", "fraction_lost", "packets_lost", "jitter_ms", "rtt_ms",
        "path_rtt", "budget", "_send_rtp", "_lookup", "_on_keyframe_request", "_on_report", "_clock",
    )

    def __init__(
        self,
        ssrc: int,
        clock_rate: int,
        *,
        send_rtp: Callable[[bytes], None],
        lookup: Callable[[int], bytes | None] | None,
        on_keyframe_request: Callable[[float], None],
        on_report: Callable[[rtcp.ReportBlock], None] | None = None,
        media_bytes: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.nacks_received = 0
        self.plis_received = 0
        self.firs_received = 0
        self.retransmitted = 0
        self.retransmitted_bytes = 0
        self.reports_received = 0
        # From the peer's report blocks about this stream (RFC 3550 6.4.1).
        self.fraction_lost = 0.0
        self.packets_lost = 0
        self.jitter_ms: float | None = None
        self.rtt_ms: float | None = None
        # The round trip its transport's feedback shows (seconds, queues on the path included; None without
        # transport-cc): a packet is not resent again before the previous copy could have arrived.
        self.path_rtt: float | None = None
        self._send_rtp = send_rtp
        self._lookup = lookup
        self._on_keyframe_request = on_keyframe_request
        self._on_report = on_report
        self._clock = clock
        self.budget = ResendBudget(media_bytes, clock())

    def on_nack(self, lost: list[int]) -> None:
        """Resend the NACKed packets still available, at once (no tick in between), within the budget."""
        self.nacks_received += 1
        lookup = self._lookup
        if lookup is None:
            return
        budget = self.budget
        now = self._clock()
        rtt = None if self.rtt_ms is None else self.rtt_ms / 1000
        if self.path_rtt is not None and (rtt is None or self.path_rtt > rtt):
            rtt = self.path_rtt
        for sequence in lost:
            if not budget.allow(sequence, now, rtt):
                continue
            packet = lookup(sequence)
            if packet is not None:
                budget.spend(sequence, len(packet), now)
                self.retransmitted += 1
                self.retransmitted_bytes += len(packet)
                self._send_rtp(packet)

    def on_keyframe_request(self, now: float, fir: bool) -> None:
        if fir:
            self.firs_received += 1
        else:
            self.plis_received += 1
        self._on_keyframe_request(now)

    def on_report_block(self, block: rtcp.ReportBlock, arrival_ntp_middle: int) -> None:
        """Loss, jitter and RTT (A - LSR - DLSR) from the peer's report about this stream."""
        self.reports_received += 1
        self.fraction_lost = block.fraction_lost / 256
        self.packets_lost = block.packets_lost
        self.jitter_ms = block.jitter * 1000 / self.clock_rate
        rtt = rtcp.rtt_ms(block.lsr, block.dlsr, arrival_ntp_middle)
        if rtt is not None:
            self.rtt_ms = rtt
        if self._on_report is not None:
            self._on_report(block)

    def sender_report(self, ntp: int, rtp_timestamp: int, packets: int, octets: int) -> rtcp.SenderReport:
        """The SR mapping wall clock `ntp` to `rtp_timestamp`, with the sender's counts (RFC 3550 6.4.1)."""
        return rtcp.SenderReport(self.ssrc, ntp, rtp_timestamp & 0xFFFFFFFF, packets & 0xFFFFFFFF, octets & 0xFFFFFFFF)
