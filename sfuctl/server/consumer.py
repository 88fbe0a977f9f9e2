"""Consumer: one outgoing copy of a producer to one peer, with its own SSRC, payload type and numbering."""

from __future__ import annotations

import random
import struct
import time
from collections import deque
from typing import TYPE_CHECKING

from ..rtc import rtcp
from ..rtc.meter import Meter
from ..rtc.rtp import build_extension_block, find_extension, read_header, seq_distance
from ..rtc.sdp import AUDIO_LEVEL_URI, MID_URI, Codec
from ..rtc.send_history import ROOM_CHECK_MASK
from ..rtc.send_stream import SendStream
from ..rtc.transport_feedback import TRANSPORT_CC_URI, extension_value
from .events import CloseListeners
from .quality import QualityMonitor

if TYPE_CHECKING:
    from .peer import Peer
    from .producer import Producer
    from .transport import Transport

# Offset changes remembered for NACK mapping (one per packet left out); a NACK older than the oldest is refused
# once any was forgotten.
SKIPS_KEPT = 64

_pack_header = struct.Struct("!BBHI").pack_into
_pack_u16 = struct.Struct("!H").pack_into


class Consumer:
    """Rewrites SSRC, payload type, sequence number, timestamp and MID of a producer's packets for one peer,
    copies the audio level (RFC 6464) when both ends negotiated it, and stamps the transport-wide sequence of its
    transport's SendHistory (transport-cc) when negotiated.

    Sequence numbers and timestamps stay continuous across pause/resume and producer changes: each (re)start
    takes new offsets so the peer sees no gap; video restarts only on a keyframe.
    """

    def __init__(
        self,
        *,
        id: str,
        peer: Peer,
        producer: Producer,
        transport: Transport,
        codec: Codec,
        mid: str,
        extensions: dict[str, int],
        ssrc: int | None = None,
    ) -> None:
        self.id = id
        self.peer = peer
        self.producer = producer
        self.transport = transport
        self.kind = producer.kind
        self.codec = codec
        self.mid = mid
        self.ssrc = ssrc if ssrc is not None else random.randint(1, 0xFFFFFFFF)
        self.paused = False
        self.closed = False
        self.close_reason: str | None = None
        self.on_close: CloseListeners[Consumer] = CloseListeners()  # its producer, transport and peer listen
        self.meter = Meter()
        self.quality = QualityMonitor(idle_score=10)
        self.rtcp = SendStream(
            self.ssrc,
            codec.clock_rate,
            send_rtp=self._resend,
            lookup=self._retransmission if self._resends() else None,
            on_keyframe_request=self._on_keyframe_request,
            on_report=self._on_report,
            media_bytes=self._media_bytes,
        )

        ext_items = [(extensions[MID_URI], mid.encode())] if MID_URI in extensions else []
        level_id = extensions.get(AUDIO_LEVEL_URI) if producer.audio_level_id is not None else None
        if level_id is not None:
            ext_items.append((level_id, bytes([producer.audio_level_byte])))
        transport_cc_id = extensions.get(TRANSPORT_CC_URI)
        if transport_cc_id is not None:
            ext_items.append((transport_cc_id, extension_value(0)))
        ext_block = build_extension_block(ext_items)
        self._send_rtp = transport.connection.send_rtp  # bound once: the transport keeps its connection
        self._header = bytearray(12) + ext_block
        # Where the audio level byte and the transport-wide sequence sit in the header (0: not written); the
        # template's first byte says "extension" only once patched, so the search reads a copy that says so.
        marked = b"\x90" + self._header[1:]
        self._level_pos = find_extension(marked, level_id) if level_id is not None else 0
        self._history = transport.send_history(transport_cc_id, codec) if transport_cc_id is not None else None
        self._transport_cc_pos = find_extension(marked, transport_cc_id) if transport_cc_id is not None else 0
        struct.pack_into("!I", self._header, 8, self.ssrc)
        self._first_byte = 0x90 if ext_block else 0x80
        self._second_byte = (codec.payload_type, 0x80 | codec.payload_type)
        self._clock_rate = codec.clock_rate
        self._seq = random.randint(0, 0xFFFF)
        self._ts = random.randint(0, 0xFFFFFFFF)
        self._last_time: float | None = None
        self._seq_offset = 0
        self._ts_offset = 0
        self._sync_seq = 0
        self._synced = False
        # (first number sent with the offset after it, the offset before it) per packet left out, oldest first
        self._skips: deque[tuple[int, int]] = deque(maxlen=SKIPS_KEPT)
        self._skips_forgotten = False
        self._waiting_keyframe = False
        self._sdes: bytes | None = None
        self._start_waiting()

    # -- media path -----------------------------------------------------------------------------------
    def forward(
        self, first_byte: int, marker: int, sequence: int, timestamp: int, payload: bytes, keyframe: bool, now: float
    ) -> None:
        """Hot path: rewrite the header for this peer, then protect and send."""
        if self.paused:
            return
        if not self._synced:
            if not self.transport.connected or (self._waiting_keyframe and not keyframe):
                return
            self._sync(sequence, timestamp, now)
        seq = (sequence + self._seq_offset) & 0xFFFF
        ts = (timestamp + self._ts_offset) & 0xFFFFFFFF
        if (seq - self._seq) & 0xFFFF < 0x8000:
            self._seq = seq
            self._ts = ts
            self._last_time = now
        header = self._header
        _pack_header(header, 0, self._first_byte | (first_byte & 0x20), self._second_byte[marker], seq, ts)
        if self._level_pos:
            header[self._level_pos] = self.producer.audio_level_byte
        history = self._history
        if history is None:
            packet = b"".join((header, payload))
            size = len(packet)
        else:  # SendHistory.add inlined: the next transport-wide sequence, its send time and size in the ring
            transport_seq = history.sequence
            history.sequence = (transport_seq + 1) & 0xFFFF
            _pack_u16(header, self._transport_cc_pos, transport_seq)
            packet = b"".join((header, payload))
            slot = transport_seq & history.mask
            if not slot & ROOM_CHECK_MASK:
                slot = history.make_room(transport_seq, now)
            history.sent[slot] = now
            history.sizes[slot] = size = len(packet)
        meter = self.meter  # Meter.add inlined: one call less per packet
        meter.packets += 1
        meter.bytes += size
        self._send_rtp(packet)

    def skip(self) -> None:
        """The producer's next packet is not forwarded (padding only): the packets after it move one number down,
        so the peer sees no gap; a NACK of an earlier one maps through the offset it was sent with."""
        if self.paused or not self._synced:
            return
        if len(self._skips) == SKIPS_KEPT:
            self._skips_forgotten = True
        self._skips.append(((self._seq + 1) & 0xFFFF, self._seq_offset))
        self._seq_offset = (self._seq_offset - 1) & 0xFFFF

    def _retransmission(self, out_seq: int) -> bytes | None:
        """The packet to resend for a NACKed sequence number of ours, from the producer's buffer (None if gone)."""
        if not self._synced or self.paused:
            return None
        offset = self._seq_offset
        for first, previous in reversed(self._skips):
            if seq_distance(out_seq, first) >= 0:
                break
            offset = previous
        else:
            if self._skips_forgotten:
                return None
        sequence = (out_seq - offset) & 0xFFFF
        if seq_distance(sequence, self._sync_seq) < 0:
            return None
        data = self.producer.rtx_buffer.get(sequence)  # type: ignore[union-attr]
        if data is None:
            return None
        marker, _, _, timestamp, _, offset = read_header(data)
        ts = (timestamp + self._ts_offset) & 0xFFFFFFFF
        header = self._header
        _pack_header(header, 0, self._first_byte | (data[0] & 0x20), self._second_byte[marker], out_seq, ts)
        payload = data[offset:]
        if self._history is not None:
            self._stamp(header, len(header) + len(payload), time.monotonic())
        return b"".join((header, payload))

    def _stamp(self, header: bytearray, size: int, now: float) -> None:
        """Write the transport's next transport-wide sequence into `header` (a copy of the template or the template
        itself) for a packet of `size` bytes sent at `now` (off the forward path: retransmissions, simulcast)."""
        _pack_u16(header, self._transport_cc_pos, self._history.add(size, now))  # type: ignore[union-attr]

    def _resends(self) -> bool:
        """Whether NACKs can be answered: the producer keeps a retransmission buffer (video)."""
        return self.producer.rtx_buffer is not None

    def _media_bytes(self) -> int:
        return self.meter.bytes - self.rtcp.retransmitted_bytes

    def _resend(self, packet: bytes) -> None:
        self.meter.add(len(packet))
        self._send_rtp(packet)

    # -- feedback and control -------------------------------------------------------------------------
    def _on_keyframe_request(self, now: float) -> None:
        self.producer.request_keyframe(now)

    def _on_report(self, block: rtcp.ReportBlock) -> None:
        """The peer's receiver report about this stream updates the score (loss net of what NACK repaired)."""
        retransmitted = self.rtcp.retransmitted
        self.quality.update(
            packets=self.meter.packets - retransmitted,
            expected=block.highest_sequence,
            lost=block.packets_lost,
            repaired=retransmitted,
            reported_fraction=block.fraction_lost / 256,
        )

    def sender_report(self, now: float) -> bytes | None:
        """SR + SDES for this stream, mapping the producer's NTP time line to this consumer's timestamps."""
        rtp_ts = self._report_timestamp(now)
        if rtp_ts is None:
            return None
        if self._sdes is None:  # built once: the SSRC and the publisher's CNAME never change
            self._sdes = bytes(rtcp.Sdes(self.ssrc, self.cname))
        return bytes(self.rtcp.sender_report(rtcp.ntp_now(), rtp_ts, self.meter.packets, self.meter.bytes)) + self._sdes

    def _report_timestamp(self, now: float) -> int | None:
        """This stream's RTP timestamp for wall-clock `now` (None before anything was sent): the publisher's
        RTP/NTP mapping through our offset, so the peer's tracks stay in sync; else our last timestamp advanced."""
        if self._last_time is None:
            return None
        source = self.producer.last_sender_report
        if source is not None:
            _, rtp_ts, arrival = source
            return rtp_ts + self._ts_offset + int((now - arrival) * self._clock_rate)
        return self._ts + int((now - self._last_time) * self._clock_rate)

    def on_transport_connected(self, now: float) -> None:
        if self._waiting_keyframe:
            self.producer.request_keyframe(now)

    def set_paused(self, paused: bool, now: float) -> None:
        if paused == self.paused:
            return
        self.paused = paused
        if not paused:
            self.resync()
            self.producer.request_keyframe(now)

    def resync(self) -> None:
        """Take new offsets at the next forwardable packet (after a keyframe for video)."""
        self._synced = False
        self._start_waiting()

    @property
    def waiting_keyframe(self) -> bool:
        return self._waiting_keyframe

    @property
    def cname(self) -> str:
        """The CNAME this stream is sent under: its publisher's."""
        return self.producer.cname

    def close(self, reason: str) -> None:
        """Idempotent: stop, and tell the owners (producer, transport, peer) why."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self.on_close.emit(self)

    def stats(self) -> dict:
        s = self.rtcp
        return {
            "id": self.id,
            "peer": self.peer.id,
            "peer_name": self.peer.name,
            "producer_id": self.producer.id,
            "producer_peer": self.producer.peer_id,
            "producer_peer_name": self.producer.peer_name,
            "kind": self.kind,
            "codec": self.codec.name,
            "ssrc": self.ssrc,
            "paused": self.paused,
            "packets": self.meter.packets,
            "bytes": self.meter.bytes,
            "bitrate_bps": round(self.meter.bitrate_bps),
            "packets_lost": s.packets_lost,
            "fraction_lost": round(self.quality.fraction_lost, 4),
            "jitter_ms": round(s.jitter_ms or 0.0, 2),
            "rtt_ms": None if s.rtt_ms is None else round(s.rtt_ms, 2),
            "nack_count": s.nacks_received,
            "pli_count": s.plis_received,
            "fir_count": s.firs_received,
            "retransmitted": s.retransmitted,
            "retransmissions_refused": s.budget.refused,
            "reports_received": s.reports_received,
            "score": self.quality.score,
            "producer_score": self.producer.quality.score,
        }

    def _start_waiting(self) -> None:
        if self.kind == "video" and not self._waiting_keyframe:
            self._waiting_keyframe = True
            self.producer.consumer_waiting(True)

    def _sync(self, sequence: int, timestamp: int, now: float) -> None:
        self._seq_offset = (self._seq + 1 - sequence) & 0xFFFF
        if self._last_time is None:
            self._ts_offset = (self._ts - timestamp) & 0xFFFFFFFF
        else:
            advance = max(1, int((now - self._last_time) * self._clock_rate))
            self._ts_offset = (self._ts + advance - timestamp) & 0xFFFFFFFF
        self._sync_seq = sequence
        self._synced = True
        self._skips.clear()
        self._skips_forgotten = False
        if self._waiting_keyframe:
            self._waiting_keyframe = False
            self.producer.consumer_waiting(False)
