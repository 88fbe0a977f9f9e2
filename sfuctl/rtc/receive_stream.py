"""ReceiveStream: the RTCP side of one RTP stream we receive, the same unit on the server and in the bots.

It keeps the RFC 3550 reception statistics, says which NACKs and keyframe requests are due, and builds the
report block the stream contributes to a receiver report. Per packet its owner calls `receive`; everything
else runs per tick or per report interval.
"""

from __future__ import annotations

from collections.abc import Callable

from . import rtcp
from .batching import KEYFRAME_MERGE_WINDOW, KEYFRAME_RETRY_INTERVAL, NACK_BATCH, batches
from .nack import NackGenerator
from .reception import ReceptionStats


class ReceiveStream:
    """Reception stats, NACK generation and keyframe requests of one incoming SSRC.

    Keyframe requests: `request_keyframe` sends one at once unless one went out less than `merge_window` ago, in
    which case it is merged into one sent when the window ends; `feedback(..., want_keyframe=True)` asks again
    once `retry_interval` has passed since the last request. `fir` picks FIR (RFC 5104) over PLI (RFC 4585).

    `on_due`, if given, is called when feedback may become due (a gap to NACK, a merged keyframe request), so
    that an owner can tick only the streams with something pending (see `pending`).
    """

    __slots__ = (
        "ssrc", "reception", "nack", "nacks_sent", "nacked_packets", "plis_sent", "firs_sent", "last_sender_report",
        "_fir", "_merge_window", "_retry_interval", "_keyframe_pending", "_last_keyframe_request", "_fir_seq", "_on_due",
    )

    def __init__(
        self,
        ssrc: int | None,
        clock_rate: int,
        *,
        nack: bool,
        fir: bool = False,
        merge_window: float = KEYFRAME_MERGE_WINDOW,
        retry_interval: float = KEYFRAME_RETRY_INTERVAL,
        on_due: Callable[[], None] | None = None,
    ) -> None:
        self.ssrc = ssrc  # None until the owner learns it (an unsignaled SSRC)
        self.reception = ReceptionStats(clock_rate)
        self.nack = NackGenerator(on_gap=on_due) if nack else None
        self.nacks_sent = 0  # NACK packets
        self.nacked_packets = 0  # sequence numbers in them
        self.plis_sent = 0
        self.firs_sent = 0
        self.last_sender_report: tuple[int, int, float] | None = None  # (ntp, rtp timestamp, arrival)
        self._fir = fir
        self._merge_window = merge_window
        self._retry_interval = retry_interval
        self._keyframe_pending = False
        self._last_keyframe_request = float("-inf")
        self._fir_seq = 0
        self._on_due = on_due

    @property
    def pending(self) -> bool:
        """Packets still to NACK or a merged keyframe request still to send."""
        return self._keyframe_pending or (self.nack is not None and self.nack.missing > 0)

    def receive(self, sequence: int, timestamp: int, now: float) -> None:
        """Hot path: account for one packet (retransmissions included)."""
        self.reception.update(sequence, timestamp, now)
        nack = self.nack
        if nack is not None:
            nack.on_packet(sequence, now)

    def on_sender_report(self, report: rtcp.SenderReport, now: float) -> None:
        """The sender's SR about this stream: its LSR for our report block, its NTP/RTP mapping for the owner."""
        self.reception.on_sender_report(report.ntp_timestamp, now)
        self.last_sender_report = (report.ntp_timestamp, report.rtp_timestamp, now)

    def request_keyframe(self, now: float, sender_ssrc: int) -> bytes | None:
        """A keyframe request to send now, or None when it was merged into the next one."""
        if now - self._last_keyframe_request >= self._merge_window:
            return self._keyframe_request(now, sender_ssrc)
        self._keyframe_pending = True
        if self._on_due is not None:
            self._on_due()
        return None

    def feedback(self, now: float, sender_ssrc: int, want_keyframe: bool = False) -> list[bytes]:
        """RTCP due now: NACKs for missing packets (NACK_BATCH numbers each), then a keyframe request when a
        merged one's window ended or when `want_keyframe` and the retry interval has passed."""
        out: list[bytes] = []
        nack = self.nack
        if nack is not None and nack.missing:
            media_ssrc = self.ssrc or 0
            for batch in batches(nack.due(now), NACK_BATCH):
                self.nacks_sent += 1
                self.nacked_packets += len(batch)
                out.append(bytes(rtcp.Nack(sender_ssrc, media_ssrc, batch)))
        since = now - self._last_keyframe_request
        if (self._keyframe_pending and since >= self._merge_window) or (want_keyframe and since >= self._retry_interval):
            request = self._keyframe_request(now, sender_ssrc)
            if request is not None:
                out.append(request)
        return out

    def report_block(self, now: float) -> rtcp.ReportBlock | None:
        """This stream's block for the next RR (None before its SSRC is known or its first packet)."""
        if self.ssrc is None or not self.reception.packets_received:
            return None
        return self.reception.report_block(self.ssrc, now)

    def _keyframe_request(self, now: float, sender_ssrc: int) -> bytes | None:
        self._keyframe_pending = False
        self._last_keyframe_request = now
        if self.ssrc is None:
            return None
        if not self._fir:
            self.plis_sent += 1
            return bytes(rtcp.Pli(sender_ssrc, self.ssrc))
        self._fir_seq = (self._fir_seq + 1) & 0xFF
        self.firs_sent += 1
        return bytes(rtcp.Fir(sender_ssrc, [(self.ssrc, self._fir_seq)]))
