"""Producer: one incoming track, received once and fanned out to its consumers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..rtc.meter import Meter
from ..rtc.nack import RetransmissionBuffer
from ..rtc.receive_stream import ReceiveStream
from ..rtc.rtp import find_extension, is_keyframe, is_padding_only, read_header
from ..rtc.sdp import Codec
from .active_speaker import SPEECH_DBOV
from .events import CloseListeners
from .quality import QualityMonitor

if TYPE_CHECKING:
    from ..rtc.rtcp import ReportBlock
    from .consumer import Consumer
    from .peer import Peer
    from .transport import Transport


# Why a consumer closed when its producer did (its peer is told: consumerClosed).
PRODUCER_CLOSED = "producer closed"


class PublishedBy:
    """Who publishes a producer (plain or simulcast): its `peer`'s id, name and RTCP CNAME."""

    peer: Peer

    @property
    def peer_id(self) -> str:
        return self.peer.id

    @property
    def peer_name(self) -> str:
        return self.peer.name

    @property
    def cname(self) -> str:
        """The publisher's RTCP CNAME, which its consumers carry on (so the subscriber can sync its tracks)."""
        return self.peer.cname


class Producer(PublishedBy):
    """An incoming RTP stream of one peer; the server decrypts it once and forwards it untouched but for headers."""

    def __init__(
        self,
        *,
        id: str,
        peer: Peer,
        transport: Transport,
        kind: str,
        codec: Codec,
        ssrc: int | None,
        mid: str,
        audio_level_id: int | None = None,
    ) -> None:
        self.id = id
        self.peer = peer
        self.transport = transport
        self.kind = kind
        self.codec = codec
        self.mid = mid
        self.paused = False
        self.closed = False
        self.consumers: list[Consumer] = []
        # PLI when NACK is negotiated (RFC 4585 implies it) or FIR is not; FIR only for a ccm fir-only codec.
        use_fir = not codec.has_feedback("nack", "pli") and codec.has_feedback("ccm", "fir")
        self.rtcp = ReceiveStream(
            ssrc, codec.clock_rate, nack=codec.has_feedback("nack"), fir=use_fir, on_due=self._feedback_due
        )
        self.reception = self.rtcp.reception
        self.meter = Meter()
        self.quality = QualityMonitor(idle_score=0)
        self.rtx_buffer = RetransmissionBuffer() if kind == "video" else None
        self.waiting_consumers = 0
        self.invalid_packets = 0
        self.keyframes = 0
        self.on_close: CloseListeners[Producer] = CloseListeners()  # its transport, peer and router listen
        # RFC 6464 audio level, when the publisher sends it: the last byte as received (V bit, level in -dBov),
        # forwarded to consumers that negotiated it, and per active-speaker step the packets and speech packets.
        self.audio_level_id = audio_level_id if kind == "audio" else None
        self.audio_level_byte = 0x7F  # -127 dBov: silence until a level arrives
        self.level_packets = 0
        self.speech_packets = 0

    @property
    def ssrc(self) -> int | None:
        """The publisher's SSRC; None until the transport learns an unsignaled one."""
        return self.rtcp.ssrc

    @ssrc.setter
    def ssrc(self, ssrc: int) -> None:
        self.rtcp.ssrc = ssrc

    @property
    def last_sender_report(self) -> tuple[int, int, float] | None:
        """(NTP time, RTP timestamp, arrival) of the publisher's last SR."""
        return self.rtcp.last_sender_report

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
        self.rtcp.receive(sequence, timestamp, now)
        payload = data[offset:]
        if is_padding_only(data[0], payload):
            # A probe of the publisher's link (libwebrtc sends them on a video SSRC when no RTX is negotiated, also
            # on an encoding it no longer encodes): received, but neither the stream's bitrate nor forwarded (a
            # receiver may take a run of them for a frame). Each consumer closes the gap it leaves.
            if not self.paused:
                for consumer in self.consumers:
                    consumer.skip()
            return
        self.meter.add(len(data))
        if self.audio_level_id is not None:
            self._read_audio_level(data)
        if self.rtx_buffer is not None:
            self.rtx_buffer.store(sequence, data)
        if self.paused or not self.consumers:
            return
        keyframe = False
        if self.waiting_consumers and is_keyframe(self.codec.name, payload):
            keyframe = True
            self.keyframes += 1
        first_byte = data[0]
        for consumer in self.consumers:
            consumer.forward(first_byte, marker, sequence, timestamp, payload, keyframe, now)

    def _read_audio_level(self, data: bytes) -> None:
        position = find_extension(data, self.audio_level_id)  # type: ignore[arg-type]
        if position < 0:
            return
        level = data[position]
        self.audio_level_byte = level
        self.level_packets += 1
        if level & 0x7F <= SPEECH_DBOV:
            self.speech_packets += 1

    def take_speech_share(self) -> float:
        """The share of audio packets since the last call that carried speech (0 without levels); resets."""
        share = self.speech_packets / self.level_packets if self.level_packets else 0.0
        self.level_packets = self.speech_packets = 0
        return share

    @property
    def audio_level_dbov(self) -> int | None:
        """The last audio level received, in dBov (0 loudest, -127 silence); None without the extension."""
        return -(self.audio_level_byte & 0x7F) if self.audio_level_id is not None else None

    # -- feedback ------------------------------------------------------------------------------------
    def request_keyframe(self, now: float) -> None:
        """Ask the publisher for a keyframe, merging requests that come closer than the merge window."""
        if self.kind != "video" or self.closed:
            return
        request = self.rtcp.request_keyframe(now, self.transport.rtcp_ssrc)
        if request is not None:
            self.transport.send_rtcp(request)

    def tick(self, now: float) -> None:
        """Every tick while `pending`: NACKs for missing packets, merged or repeated keyframe requests."""
        for packet in self.rtcp.feedback(now, self.transport.rtcp_ssrc, want_keyframe=self.waiting_consumers > 0):
            self.transport.send_rtcp(packet)

    @property
    def pending(self) -> bool:
        """Something may come due at a tick: packets to NACK, a merged keyframe request, consumers waiting."""
        return not self.closed and (self.waiting_consumers > 0 or self.rtcp.pending)

    def _feedback_due(self) -> None:
        self.transport.feedback_due(self)

    def update_quality(self) -> None:
        """Once per report interval: loss over the last intervals and the score, as the server receives them."""
        r = self.reception
        self.quality.update(packets=r.packets_received, expected=r.expected, lost=r.packets_lost)

    def receive_streams(self) -> list[Producer]:
        """The per-SSRC streams the transport reports on: this one."""
        return [self]

    def report_block(self, now: float) -> ReportBlock | None:
        return self.rtcp.report_block(now)

    def add_consumer(self, consumer: Consumer) -> None:
        self.consumers.append(consumer)
        consumer.on_close.add(self._on_consumer_closed)

    def _on_consumer_closed(self, consumer: Consumer) -> None:
        if consumer in self.consumers:
            self.consumers.remove(consumer)
            if consumer.waiting_keyframe:
                self.waiting_consumers -= 1

    def consumer_waiting(self, waiting: bool) -> None:
        """A consumer starts (True) or stops (False) waiting for a keyframe."""
        self.waiting_consumers += 1 if waiting else -1
        if waiting:
            self._feedback_due()

    def set_paused(self, paused: bool, now: float) -> None:
        if paused == self.paused:
            return
        self.paused = paused
        if not paused:
            for consumer in self.consumers:
                consumer.resync()
            self.request_keyframe(now)

    def close(self) -> None:
        """Idempotent: close every consumer of this producer, then tell the owners (transport, peer, router)."""
        if self.closed:
            return
        self.closed = True
        for consumer in list(self.consumers):
            consumer.close(PRODUCER_CLOSED)
        self.on_close.emit(self)

    def stats(self) -> dict:
        r = self.reception
        return {
            "id": self.id,
            "peer": self.peer_id,
            "peer_name": self.peer_name,
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
            "nack_count": self.rtcp.nacks_sent,
            "pli_count": self.rtcp.plis_sent,
            "fir_count": self.rtcp.firs_sent,
            "keyframes": self.keyframes,
            "consumers": len(self.consumers),
            "score": self.quality.score,
            "audio_level_dbov": self.audio_level_dbov,
        }
