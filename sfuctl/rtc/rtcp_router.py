"""RtcpRouter: parses each compound RTCP packet of a connection once and hands every part to the stream whose
SSRC it names; both ends (server transports, bot links) route through it.

Streams register under their SSRC; the router never decides what a stream does with its feedback.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from . import rtcp
from .batching import REPORT_BLOCKS_MAX, batches
from .transport_feedback import TransportFeedback


class ReceivingStream(Protocol):
    """What a stream we receive answers: the sender's reports about it."""

    def on_sender_report(self, report: rtcp.SenderReport, now: float) -> None: ...


class SendingStream(Protocol):
    """What a stream we send answers: feedback from its receiver."""

    def on_nack(self, lost: list[int]) -> None: ...

    def on_keyframe_request(self, now: float, fir: bool) -> None: ...

    def on_report_block(self, block: rtcp.ReportBlock, arrival_ntp_middle: int) -> None: ...


class RtcpRouter:
    """SSRC -> stream tables for one connection; `route` is the connection's RTCP callback.

    `invalid` counts datagrams that did not parse (nothing of them is used); `unclaimed` counts parts (an SR, a
    report block, a NACK, PLI or FIR entry) naming an SSRC no stream registered, and transport feedback when no
    `on_transport_feedback` handler is set. SDES and BYE are read and left; a REMB goes to
    `on_remb(bitrate_bps, now)` and transport feedback to `on_transport_feedback(packet, now)` when the owner set
    them (both are about the whole connection, not a stream).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.receiving: dict[int, ReceivingStream] = {}
        self.sending: dict[int, SendingStream] = {}
        self.invalid = 0
        self.unclaimed = 0
        self.on_remb: Callable[[float, float], None] | None = None
        self.on_transport_feedback: Callable[[TransportFeedback, float], None] | None = None
        self._clock = clock

    def add_receiving(self, ssrc: int, stream: ReceivingStream) -> None:
        self.receiving[ssrc] = stream

    def remove_receiving(self, ssrc: int, stream: ReceivingStream) -> None:
        if self.receiving.get(ssrc) is stream:
            del self.receiving[ssrc]

    def add_sending(self, ssrc: int, stream: SendingStream) -> None:
        self.sending[ssrc] = stream

    def remove_sending(self, ssrc: int, stream: SendingStream) -> None:
        if self.sending.get(ssrc) is stream:
            del self.sending[ssrc]

    def route(self, data: bytes) -> None:
        """Parse a (compound) RTCP datagram once and deliver each part, in order."""
        try:
            packets = rtcp.parse_compound(data)
        except ValueError:
            self.invalid += 1
            return
        now = self._clock()
        arrival: int | None = None  # NTP middle 32 bits, read once, when a report block needs it
        sending = self.sending
        for packet in packets:
            if isinstance(packet, (rtcp.SenderReport, rtcp.ReceiverReport)):
                if isinstance(packet, rtcp.SenderReport):
                    stream = self.receiving.get(packet.ssrc)
                    if stream is not None:
                        stream.on_sender_report(packet, now)
                    else:
                        self.unclaimed += 1
                for block in packet.reports:
                    sender = sending.get(block.ssrc)
                    if sender is None:
                        self.unclaimed += 1
                        continue
                    if arrival is None:
                        arrival = rtcp.ntp_middle(rtcp.ntp_now())
                    sender.on_report_block(block, arrival)
            elif isinstance(packet, rtcp.Nack):
                sender = sending.get(packet.media_ssrc)
                if sender is not None:
                    sender.on_nack(packet.lost)
                else:
                    self.unclaimed += 1
            elif isinstance(packet, rtcp.Pli):
                sender = sending.get(packet.media_ssrc)
                if sender is not None:
                    sender.on_keyframe_request(now, False)
                else:
                    self.unclaimed += 1
            elif isinstance(packet, TransportFeedback):
                if self.on_transport_feedback is not None:
                    self.on_transport_feedback(packet, now)
                else:
                    self.unclaimed += 1
            elif isinstance(packet, rtcp.Fir):
                for ssrc, _ in packet.entries:
                    sender = sending.get(ssrc)
                    if sender is not None:
                        sender.on_keyframe_request(now, True)
                    else:
                        self.unclaimed += 1
            elif isinstance(packet, rtcp.Remb) and self.on_remb is not None:
                self.on_remb(packet.bitrate, now)


def receiver_reports(rtcp_ssrc: int, blocks: list[rtcp.ReportBlock], sdes: bytes) -> list[bytes]:
    """Compound RR + SDES packets carrying `blocks`, REPORT_BLOCKS_MAX per RR (none for no blocks)."""
    return [bytes(rtcp.ReceiverReport(rtcp_ssrc, batch)) + sdes for batch in batches(blocks, REPORT_BLOCKS_MAX)]
