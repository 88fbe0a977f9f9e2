"""The receiving side of a bot: per-consumer statistics from RTP headers and RTCP, no decoding.

Per packet: read_header, ReceiveStream.receive (RFC 3550 A.1/A.3/A.8 statistics and NACK tracking, the unit
the server's producers use too) and the FrameTracker, the bot's own frame, freeze and loss accounting that
checks the server independently. Once per tick (tens of ms): NACK and PLI; once per report interval: RR + SDES.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from sfuctl.rtc import rtcp
from sfuctl.rtc.batching import KEYFRAME_RETRY_INTERVAL
from sfuctl.rtc.receive_stream import ReceiveStream
from sfuctl.rtc.reception import ReceptionStats
from sfuctl.rtc.arrival_recorder import ArrivalRecorder
from sfuctl.rtc.rtcp_router import RtcpRouter, receiver_reports
from sfuctl.rtc.transport_feedback import TRANSPORT_CC_URI, packet_sequence
from sfuctl.rtc.rtp import is_keyframe, read_header
from sfuctl.rtc.vp8 import keyframe_size

from .decode import FrameDecoder
from .frames import FrameTracker

# A video consumer that has packets but no keyframe after this long asks for one.
KEYFRAME_WAIT = 1.0
# Changes of received frame size kept with their times (a simulcast consumer's layer over time).
SIZE_LOG = 64
NACK_GIVE_UP = 1.5  # NackGenerator stops after 1 s; a late retransmission still completes its frame
REORDER_ALLOWANCE = 0.1

_unpack_ssrc = struct.Struct("!I").unpack_from


@dataclass(frozen=True)
class ConsumerInfo:
    """A consumer as the server described it (subscribe result + answer)."""

    consumer_id: str
    producer_id: str
    producer_peer: str
    producer_name: str
    kind: str
    codec: str
    mid: str
    ssrc: int
    clock_rate: int
    nack: bool


class ConsumerStream:
    """Receive statistics of one consumer. `announced_at` is when the bot learnt of the producer (loop time)."""

    __slots__ = (
        "info", "announced_at", "video", "packets", "bytes", "keyframes", "first_packet_at", "first_frame_at",
        "closed_at", "rtcp", "frames", "decoder", "size", "size_log", "size_changes", "switch_gaps", "_last_ts", "_prev",
    )

    def __init__(self, info: ConsumerInfo, announced_at: float, decode: bool = False) -> None:
        self.info = info
        self.announced_at = announced_at
        self.video = info.kind == "video"
        self.packets = 0
        self.bytes = 0
        self.keyframes = 0
        self.first_packet_at: float | None = None
        self.first_frame_at: float | None = None
        self.closed_at: float | None = None
        # A PLI at most once per retry interval, and only when this bot sees a reason (never merged).
        self.rtcp = ReceiveStream(
            info.ssrc, info.clock_rate, nack=info.nack, merge_window=KEYFRAME_RETRY_INTERVAL,
            retry_interval=KEYFRAME_RETRY_INTERVAL,
        )
        # Without NACK a missing packet never comes: give it up after a reordering allowance.
        self.frames = FrameTracker(
            info.clock_rate, detect_freezes=self.video, max_age=NACK_GIVE_UP if info.nack else REORDER_ALLOWANCE
        )
        self.decoder = FrameDecoder(info.codec) if decode else None
        self.size: tuple[int, int] | None = None  # VP8 frame size of the last keyframe
        self.size_log: deque[tuple[float, int, int]] = deque(maxlen=SIZE_LOG)  # (since, width, height)
        self.size_changes = 0  # all of them: the log keeps the last SIZE_LOG
        self.switch_gaps: deque[float] = deque(maxlen=SIZE_LOG)  # seconds from the last frame before a size change
        self._last_ts: int | None = None
        self._prev = (0, 0, 0, 0, 0, 0.0, 0)

    @property
    def reception(self) -> ReceptionStats:
        return self.rtcp.reception

    @property
    def nacks_sent(self) -> int:
        return self.rtcp.nacks_sent

    @property
    def nacked_packets(self) -> int:
        return self.rtcp.nacked_packets

    @property
    def plis_sent(self) -> int:
        return self.rtcp.plis_sent

    def receive(self, data: bytes, now: float) -> None:
        """Hot path; raises ValueError for a malformed header."""
        marker, _, sequence, timestamp, _, offset = read_header(data)
        self.packets += 1
        self.bytes += len(data)
        self.rtcp.receive(sequence, timestamp, now)
        video = self.video
        if not self.frames.on_packet(sequence, marker or not video, now):
            return
        if self.decoder is not None:
            self.decoder.on_packet(sequence, marker, data[offset:])
        if timestamp != self._last_ts:
            self._last_ts = timestamp
            if video and is_keyframe(self.info.codec, data[offset:]):
                self.keyframes += 1
                if self.first_frame_at is None:
                    self.first_frame_at = now
                size = keyframe_size(data[offset:]) if self.info.codec == "VP8" else None
                if size is not None and size != self.size:
                    self._size_changed(size, now)
        if self.first_packet_at is None:
            self.first_packet_at = now
            if not video:
                self.first_frame_at = now

    def _size_changed(self, size: tuple[int, int], now: float) -> None:
        """A keyframe of another size: the server switched simulcast encodings (or the first keyframe)."""
        last = self.frames.last_complete_at
        if self.size is not None:
            self.size_changes += 1
            if last is not None:
                self.switch_gaps.append(now - last)
        self.size = size
        self.size_log.append((now, *size))

    def feedback(self, now: float, sender_ssrc: int) -> list[bytes]:
        """RTCP feedback due now: NACKs for missing packets, a PLI when a frame was given up or no keyframe came."""
        given_up = self.frames.expire(now) if self.frames.missing else 0
        starving = (
            self.video
            and self.first_frame_at is None
            and self.first_packet_at is not None
            and now - self.first_packet_at > KEYFRAME_WAIT
        )
        return self.rtcp.feedback(now, sender_ssrc, want_keyframe=self.video and bool(given_up or starving))

    def freeze_totals(self, now: float) -> tuple[int, float]:
        """(freezes, frozen seconds) up to `now`, or to the stream's close: a freeze still open counts so far."""
        return self.frames.freeze_totals(now if self.closed_at is None else min(now, self.closed_at))

    def interval(self, now: float) -> tuple[int, int, int, int, int, float, int]:
        """(bytes, expected, lost, lost before recovery, freezes, frozen seconds, frames given up) since the
        previous call, at `now` (a freeze still open counts up to it)."""
        reception = self.reception
        frames = self.frames
        freezes, frozen = self.freeze_totals(now)
        totals = (self.bytes, reception.expected, reception.packets_lost, frames.lost_first, freezes, frozen,
                  frames.lost_frames)
        prev = self._prev
        self._prev = totals
        return (totals[0] - prev[0], totals[1] - prev[1], totals[2] - prev[2], totals[3] - prev[3],
                totals[4] - prev[4], totals[5] - prev[5], totals[6] - prev[6])

    def stats(self, now: float, rtt_ms: float | None) -> dict:
        info = self.info
        reception = self.reception
        frames = self.frames
        expected = reception.expected
        freezes, frozen = self.freeze_totals(now)
        end = self.closed_at if self.closed_at is not None else now
        active = end - self.first_packet_at if self.first_packet_at is not None else 0.0
        return {
            "consumer_id": info.consumer_id,
            "producer_id": info.producer_id,
            "producer_peer": info.producer_peer,
            "producer_name": info.producer_name,
            "kind": info.kind,
            "codec": info.codec,
            "mid": info.mid,
            "ssrc": info.ssrc,
            "packets": self.packets,
            "bytes": self.bytes,
            "bitrate_bps": round(self.bytes * 8 / active) if active > 0 else 0,
            "expected": expected,
            "packets_lost": reception.packets_lost,
            "fraction_lost": max(0, reception.packets_lost) / expected if expected else 0.0,
            "lost_before_recovery": frames.lost_first,
            "fraction_lost_before_recovery": frames.lost_first / expected if expected else 0.0,
            "jitter_ms": reception.jitter_ms,
            "rtt_ms": rtt_ms,
            "frames": frames.frames,
            "complete_frames": frames.complete_frames,
            "lost_frames": frames.lost_frames,
            "keyframes": self.keyframes,
            "freezes": freezes,
            "freeze_ms": frozen * 1000.0,
            "first_frame_ms": (self.first_frame_at - self.announced_at) * 1000.0
            if self.first_frame_at is not None
            else None,
            "nacks_sent": self.nacks_sent,
            "nacked_packets": self.nacked_packets,
            "plis_sent": self.plis_sent,
            "duplicates": frames.duplicates,
            "closed": self.closed_at is not None,
            "decode": self.decoder.stats() if self.decoder is not None else None,
            "width": self.size[0] if self.size else None,
            "height": self.size[1] if self.size else None,
            "size_changes": self.size_changes,
            "switch_gap_ms": [round(gap * 1000, 1) for gap in self.switch_gaps],
        }


class Subscriber:
    """A bot's receive transport: its consumers by SSRC, SRs in, RR/NACK/PLI out."""

    def __init__(
        self,
        send_rtcp: Callable[[bytes], None],
        cname: str,
        rtcp_ssrc: int,
        clock: Callable[[], float],
        router: RtcpRouter | None = None,
    ) -> None:
        """`router`: the connection's RTCP router when other streams share the connection (a mesh link)."""
        self.streams: list[ConsumerStream] = []
        self.by_ssrc: dict[int, ConsumerStream] = {}
        self.rtcp_ssrc = rtcp_ssrc
        self.router = router if router is not None else RtcpRouter(clock)
        self.unknown_packets = 0
        self.invalid_packets = 0
        self.arrivals: ArrivalRecorder | None = None  # transport feedback, once the server stamps transport-cc
        self.probe_ssrc: int | None = None  # the server's padding-only probes (its subscribe answer says which)
        self.probe_packets = 0
        self._transport_cc_id = 0
        self._send_rtcp = send_rtcp
        self._cname = cname
        self._clock = clock

    def add(self, stream: ConsumerStream) -> None:
        self.streams.append(stream)
        self.by_ssrc[stream.info.ssrc] = stream
        self.router.add_receiving(stream.info.ssrc, stream.rtcp)

    def record_arrivals(self, extensions: dict[str, int]) -> None:
        """An answered m-line's header extensions: when they include transport-cc, the server stamps transport-wide
        sequences with it; record them and send transport feedback."""
        if TRANSPORT_CC_URI not in extensions:
            return
        self._transport_cc_id = extensions[TRANSPORT_CC_URI]
        if self.arrivals is None:
            self.arrivals = ArrivalRecorder(self.rtcp_ssrc)

    def close(self, consumer_id: str, now: float) -> None:
        """The consumer is gone (its producer closed): keep its figures, stop routing its SSRC."""
        for ssrc, stream in list(self.by_ssrc.items()):
            if stream.info.consumer_id == consumer_id:
                stream.closed_at = now
                del self.by_ssrc[ssrc]
                self.router.remove_receiving(ssrc, stream.rtcp)

    @property
    def invalid_rtcp(self) -> int:
        """RTCP datagrams on this connection that did not parse."""
        return self.router.invalid

    def on_rtp(self, data: bytes) -> None:
        if self.arrivals is not None:
            sequence = packet_sequence(data, self._transport_cc_id)
            if sequence >= 0:
                self.arrivals.record(sequence, self._clock())
        try:
            ssrc = _unpack_ssrc(data, 8)[0]
            stream = self.by_ssrc.get(ssrc)
            if stream is None:
                if ssrc == self.probe_ssrc:
                    self.probe_packets += 1  # recorded for transport feedback above, nothing else to do
                else:
                    self.unknown_packets += 1
                return
            stream.receive(data, self._clock())
        except (ValueError, struct.error):
            self.invalid_packets += 1

    def tick(self, now: float) -> None:
        for stream in self.by_ssrc.values():
            for packet in stream.feedback(now, self.rtcp_ssrc):
                self._send_rtcp(packet)
        if self.arrivals is not None:
            if not self.arrivals.media_ssrc and self.by_ssrc:
                self.arrivals.media_ssrc = next(iter(self.by_ssrc))
            for packet in self.arrivals.feedback(now):
                self._send_rtcp(packet)

    def send_report(self, now: float) -> None:
        """RR blocks for every open consumer that has received something, then SDES."""
        blocks = [b for b in (s.rtcp.report_block(now) for s in self.by_ssrc.values()) if b is not None]
        sdes = bytes(rtcp.Sdes(self.rtcp_ssrc, self._cname))
        if not blocks:
            self._send_rtcp(bytes(rtcp.ReceiverReport(self.rtcp_ssrc)) + sdes)
            return
        for packet in receiver_reports(self.rtcp_ssrc, blocks, sdes):
            self._send_rtcp(packet)
