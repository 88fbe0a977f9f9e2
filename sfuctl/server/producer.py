"""Producer: one incoming track, received once and fanned out to its consumers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..rtc import rtcp
from ..rtc.nack import NackGenerator, RetransmissionBuffer
from ..rtc.reception import ReceptionStats
from ..rtc.rtp import is_keyframe, read_header
from ..rtc.sdp import Codec
from ..rtc.meter import Meter
from .stats import QualityMonitor

if TYPE_CHECKING:
    from .consumer import Consumer
    from .peer import Peer
    from .transport import Transport

# Keyframe requests sent to a publisher are at most this often; requests in between are merged into one.
KEYFRAME_REQUEST_INTERVAL = 0.5
NACK_BATCH = 64
# A consumer still waiting for a keyframe (the request or the keyframe was lost) asks again this often.
KEYFRAME_RETRY_INTERVAL = 1.0


class Producer:
    """An incoming RTP stream of one peer; the server decrypts it once and forwards it untouched but for headers."""

    def __init__(
        self, *, id: str, peer: Peer, transport: Transport, kind: str, codec: Codec, ssrc: int | None, mid: str
    ) -> None:
        self.id = id
        self.peer = peer
        self.transport = transport
        self.kind = kind
        self.codec = codec
        self.ssrc = ssrc
        self.mid = mid
        self.paused = False
        self.closed = False
        self.consumers: list[Consumer] = []
        self.reception = ReceptionStats(codec.clock_rate)
        self.meter = Meter()
        self.quality = QualityMonitor(idle_score=0)
        self.nack = NackGenerator() if codec.has_feedback("nack") else None
        self.rtx_buffer = RetransmissionBuffer() if kind == "video" else None
        self.waiting_consumers = 0
        self.invalid_packets = 0
        self.nacks_sent = 0
        self.plis_sent = 0
        self.firs_sent = 0
        self.keyframes = 0
        self.last_sender_report: tuple[int, int, float] | None = None  # (ntp, rtp timestamp, arrival)
        self._keyframe_pending = False
        self._last_keyframe_request = float("-inf")
        self._fir_seq = 0

    # -- media path -----------------------------------------------------------------------------------
    def receive(self, data: bytes, now: float) -> None:
        """Hot path: account for one decrypted RTP packet and forward it to every consumer."""
        try:
            marker, payload_type, sequence, timestamp, _, offset = read_header(data)
        except ValueError:
            self.invalid_packets += 1
            return
        if payload_type != self.codec.payload_type:
            return
        self.meter.add(len(data))
        self.reception.update(sequence, timestamp, now)
        if self.nack is not None:
            self.nack.on_packet(sequence, now)
        if self.rtx_buffer is not None:
            self.rtx_buffer.store(sequence, data)
        if self.paused or not self.consumers:
            return
        payload = data[offset:]
        keyframe = False
        if self.waiting_consumers and is_keyframe(self.codec.name, payload):
            keyframe = True
            self.keyframes += 1
        first_byte = data[0]
        for consumer in self.consumers:
            consumer.forward(first_byte, marker, sequence, timestamp, payload, keyframe, now)

    # -- feedback ------------------------------------------------------------------------------------
    def request_keyframe(self, now: float) -> None:
        """Ask the publisher for a keyframe, merging requests that come closer than the interval."""
        if self.kind != "video" or self.closed:
            return
        if now - self._last_keyframe_request >= KEYFRAME_REQUEST_INTERVAL:
            self._send_keyframe_request(now)
        else:
            self._keyframe_pending = True

    def on_sender_report(self, report: rtcp.SenderReport, now: float) -> None:
        self.reception.on_sender_report(report.ntp_timestamp, now)
        self.last_sender_report = (report.ntp_timestamp, report.rtp_timestamp, now)

    def tick(self, now: float) -> None:
        """Frequent work (every few tens of ms): NACKs for missing packets, merged keyframe requests."""
        if self.nack is not None and self.nack.missing:
            lost = self.nack.due(now)
            for start in range(0, len(lost), NACK_BATCH):  # keep each NACK packet well under the MTU
                self.nacks_sent += 1
                batch = lost[start : start + NACK_BATCH]
                self.transport.send_rtcp(bytes(rtcp.Nack(self.transport.rtcp_ssrc, self.ssrc or 0, batch)))
        since = now - self._last_keyframe_request
        if (self._keyframe_pending and since >= KEYFRAME_REQUEST_INTERVAL) or (
            self.waiting_consumers and since >= KEYFRAME_RETRY_INTERVAL
        ):
            self._send_keyframe_request(now)

    def update_quality(self) -> None:
        """Once per report interval: loss over the last intervals and the score, as the server receives them."""
        r = self.reception
        self.quality.update(packets=r.packets_received, expected=r.expected, lost=r.packets_lost)

    def report_block(self, now: float) -> rtcp.ReportBlock | None:
        if self.ssrc is None or not self.reception.packets_received:
            return None
        return self.reception.report_block(self.ssrc, now)

    def add_consumer(self, consumer: Consumer) -> None:
        self.consumers.append(consumer)

    def remove_consumer(self, consumer: Consumer) -> None:
        if consumer in self.consumers:
            self.consumers.remove(consumer)

    def set_paused(self, paused: bool, now: float) -> None:
        if paused == self.paused:
            return
        self.paused = paused
        if not paused:
            for consumer in self.consumers:
                consumer.resync()
            self.request_keyframe(now)

    def close(self) -> None:
        """Stop receiving; consumers are closed by the router, which owns the fan-out."""
        self.closed = True
        self.consumers.clear()

    def stats(self) -> dict:
        r = self.reception
        return {
            "id": self.id,
            "peer": self.peer.id,
            "peer_name": self.peer.name,
            "kind": self.kind,
            "codec": self.codec.name,
            "ssrc": self.ssrc,
            "paused": self.paused,
            "packets": self.meter.packets,
            "bytes": self.meter.bytes,
            "bitrate_bps": round(self.meter.bitrate_bps),
            "packets_lost": r.packets_lost,
            "fraction_lost": round(self.quality.fraction_lost, 4),
            "jitter_ms": round(r.jitter_ms, 2),
            "rtt_ms": None,  # a publisher's RTCP carries no report about the server (that needs XR DLRR)
            "nack_count": self.nacks_sent,
            "pli_count": self.plis_sent,
            "fir_count": self.firs_sent,
            "keyframes": self.keyframes,
            "consumers": len(self.consumers),
            "score": self.quality.score,
        }

    def _send_keyframe_request(self, now: float) -> None:
        self._keyframe_pending = False
        self._last_keyframe_request = now
        if self.ssrc is None:
            return
        if self.codec.has_feedback("nack", "pli") or not self.codec.has_feedback("ccm", "fir"):
            self.plis_sent += 1
            self.transport.send_rtcp(bytes(rtcp.Pli(self.transport.rtcp_ssrc, self.ssrc)))
        else:
            self._fir_seq = (self._fir_seq + 1) & 0xFF
            self.firs_sent += 1
            self.transport.send_rtcp(bytes(rtcp.Fir(self.transport.rtcp_ssrc, [(self.ssrc, self._fir_seq)])))
