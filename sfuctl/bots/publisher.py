"""The sending side of a bot: pre-encoded frames out as RTP without encoding, answering NACK, PLI and FIR.

Per packet: one struct.pack_into on the stream's header template, a join with the payload, protect, send.
"""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Callable

from sfuctl.encoded import EncodedTrack, FrameCursor
from sfuctl.rtc import rtcp
from sfuctl.rtc.nack import RetransmissionBuffer
from sfuctl.rtc.rtcp_router import RtcpRouter
from sfuctl.rtc.rtp import build_extension_block, find_extension
from sfuctl.rtc.send_stream import SendStream

_pack_header = struct.Struct("!BBHII").pack_into
_pack_vp8_header = struct.Struct("!BBHIIBBH").pack_into  # RTP header + the 4-byte VP8 descriptor
_pack_vp8_descriptor = struct.Struct("!BBH").pack_into
VP8_DESCRIPTOR_SIZE = 4
RTP_HEADER_SIZE = 12


class StreamSender:
    """One outgoing stream: paces a FrameCursor, keeps recent packets for NACK; its SendStream (`rtcp`, the unit
    the server's consumers use too) answers NACKs, counts PLI/FIR, reads the server's reports and builds SRs."""

    __slots__ = (
        "active", "kind", "codec", "ssrc", "payload_type", "clock_rate", "cursor", "packets", "octets", "frames",
        "keyframes", "rtcp", "rid", "_send", "_header", "_vp8", "_seq", "_picture_id", "_rtx", "_last_ts",
        "_last_time", "_first_packet", "_level", "_level_pos", "_first_byte", "_descriptor_at", "paused",
        "pauses", "_paused_at", "_paused_seconds",
    )

    def __init__(
        self,
        track: EncodedTrack,
        *,
        ssrc: int,
        payload_type: int,
        send_rtp: Callable[[bytes], None],
        rng: random.Random,
        nack: bool,
        level: Callable[[], int] | None = None,
        level_id: int | None = None,
        extensions: bytes = b"",
        rid: str | None = None,
    ) -> None:
        """`level` gives each audio frame's RFC 6464 level byte, sent under extension id `level_id`; `extensions`
        is a header extension block (rtp.build_extension_block) every packet carries: a simulcast encoding's MID
        and RID (`rid`)."""
        self.active = True
        self.paused = False  # a simulcast encoding the server said nobody takes: frames go by unsent
        self.pauses = 0
        self._paused_at = 0.0
        self._paused_seconds = 0.0  # in pauses that ended
        self.rid = rid
        self.kind = track.kind
        self.codec = track.codec
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.clock_rate = track.clock_rate
        self.cursor = FrameCursor(track, start_timestamp=rng.getrandbits(32))
        self.packets = 0
        self.octets = 0
        self.frames = 0
        self.keyframes = 0
        self._send = send_rtp
        self._vp8 = track.codec == "VP8"
        self._level = level if level_id is not None and self.kind == "audio" else None
        if self._level is not None:  # audio: the level is its only extension
            extensions = build_extension_block([(level_id, b"\x00")])  # type: ignore[list-item]
        self._header = bytearray(RTP_HEADER_SIZE) + extensions + bytearray(VP8_DESCRIPTOR_SIZE if self._vp8 else 0)
        self._first_byte = 0x90 if extensions else 0x80  # RTP version 2, and the X bit when an extension follows
        self._descriptor_at = RTP_HEADER_SIZE + len(extensions)
        # Where the level byte sits (the template says "extension" only once patched: search a copy that does).
        self._level_pos = find_extension(b"\x90" + bytes(self._header[1:]), level_id) if self._level is not None else 0  # type: ignore[arg-type]
        self._seq = rng.getrandbits(16)
        self._picture_id = rng.getrandbits(15)
        self._rtx = RetransmissionBuffer(1024) if nack else None
        self._last_ts = 0
        self._last_time: float | None = None
        self._first_packet = True
        self.rtcp = SendStream(
            ssrc,
            track.clock_rate,
            send_rtp=send_rtp,
            lookup=self._rtx.get if self._rtx is not None else None,
            on_keyframe_request=self._on_keyframe_request,
            media_bytes=lambda: self.octets,
        )

    # What the server's feedback said about this stream.
    @property
    def retransmitted(self) -> int:
        return self.rtcp.retransmitted

    @property
    def nacks(self) -> int:
        return self.rtcp.nacks_received

    @property
    def plis(self) -> int:
        return self.rtcp.plis_received

    @property
    def firs(self) -> int:
        return self.rtcp.firs_received

    @property
    def fraction_lost(self) -> float:
        return self.rtcp.fraction_lost

    @property
    def packets_lost(self) -> int:
        return self.rtcp.packets_lost

    @property
    def jitter_ms(self) -> float | None:
        return self.rtcp.jitter_ms

    @property
    def rtt_ms(self) -> float | None:
        return self.rtcp.rtt_ms

    def __repr__(self) -> str:
        return f"<StreamSender {self.kind} ssrc={self.ssrc}>"

    def send_frame(self, now: float) -> float:
        """Send the next frame (marker on its last packet; audio marks only its first packet, RFC 3551).

        A paused stream takes its frames from the cursor without sending them (its clock goes on for its SRs).
        """
        timestamp, frame, seconds = self.cursor.next()
        if self.paused:
            self._last_ts = timestamp
            self._last_time = now
            return seconds
        payloads = frame.payloads
        header = self._header
        pt = self.payload_type
        ssrc = self.ssrc
        send = self._send
        rtx = self._rtx
        join = b"".join
        seq = self._seq
        octets = 0
        if self._vp8:
            picture_id = self._picture_id = (self._picture_id + 1) & 0x7FFF
            picture_word = 0x8000 | picture_id
            last = len(payloads) - 1
            first = self._first_byte
            at = self._descriptor_at
            for index, payload in enumerate(payloads):
                seq = (seq + 1) & 0xFFFF
                second = pt | 0x80 if index == last else pt
                if at == RTP_HEADER_SIZE:
                    _pack_vp8_header(header, 0, 0x80, second, seq, timestamp, ssrc, payload[0], payload[1], picture_word)
                else:  # header extensions sit between the fixed header and the descriptor
                    _pack_header(header, 0, first, second, seq, timestamp, ssrc)
                    _pack_vp8_descriptor(header, at, payload[0], payload[1], picture_word)
                packet = join((header, memoryview(payload)[4:]))
                if rtx is not None:
                    rtx.store(seq, packet)
                send(packet)
                octets += len(payload)
        else:
            last = len(payloads) - 1 if self.kind == "video" else -1
            if self._level is not None:
                header[self._level_pos] = self._level()
            for index, payload in enumerate(payloads):
                seq = (seq + 1) & 0xFFFF
                second = pt | 0x80 if index == last or self._first_packet else pt
                self._first_packet = False
                _pack_header(header, 0, self._first_byte, second, seq, timestamp, ssrc)
                packet = join((header, payload))
                if rtx is not None:
                    rtx.store(seq, packet)
                send(packet)
                octets += len(payload)
        self._seq = seq
        self.packets += len(payloads)
        self.octets += octets
        self.frames += 1
        if frame.keyframe and self.kind == "video":
            self.keyframes += 1
        self._last_ts = timestamp
        self._last_time = now
        return seconds

    def _on_keyframe_request(self, now: float) -> None:
        self.cursor.request_keyframe()

    def set_paused(self, paused: bool, now: float) -> None:
        """Stop sending, or send again starting with a keyframe (the server switches consumers at one)."""
        if paused == self.paused:
            return
        self.paused = paused
        if paused:
            self.pauses += 1
            self._paused_at = now
        else:
            self._paused_seconds += now - self._paused_at
            self.cursor.request_keyframe()

    def paused_seconds(self, now: float) -> float:
        """Seconds this stream spent paused, up to `now`."""
        return self._paused_seconds + (now - self._paused_at if self.paused else 0.0)

    def sender_report(self, now: float, ntp: int) -> rtcp.SenderReport | None:
        """An SR mapping `ntp` (wall clock) to this stream's RTP time at loop time `now`."""
        if self._last_time is None:
            return None
        rtp_ts = self._last_ts + int((now - self._last_time) * self.clock_rate)
        return self.rtcp.sender_report(ntp, rtp_ts, self.packets, self.octets)

    def stats(self, elapsed: float, now: float) -> dict:
        """Figures for the report at `now`; bytes and bitrate count whole RTP packets (header + payload)."""
        header_size = self._descriptor_at  # fixed header and extensions (VP8: its descriptor is payload)
        packet_bytes = self.octets + header_size * self.packets
        return {
            "kind": self.kind,
            "codec": self.codec,
            "ssrc": self.ssrc,
            "rid": self.rid,
            "packets": self.packets,
            "bytes": packet_bytes,
            "payload_bytes": self.octets,
            "bitrate_bps": round(packet_bytes * 8 / elapsed) if elapsed > 0 else 0,
            "frames": self.frames,
            "keyframes": self.keyframes,
            "retransmitted": self.retransmitted,
            "nacks_received": self.nacks,
            "plis_received": self.plis,
            "firs_received": self.firs,
            "reported_fraction_lost": self.fraction_lost,
            "reported_packets_lost": self.packets_lost,
            "reported_jitter_ms": self.jitter_ms,
            "rtt_ms": self.rtt_ms,
            "paused": self.paused,
            "pauses": self.pauses,
            "paused_s": round(self.paused_seconds(now), 3),
        }


class Publisher:
    """A bot's send transport: its streams, the feedback the server sends about them, and their SRs."""

    def __init__(
        self, senders: list[StreamSender], send_rtcp: Callable[[bytes], None], cname: str, router: RtcpRouter | None = None
    ) -> None:
        """`router`: the connection's RTCP router when other streams share the connection (a mesh link)."""
        self.senders = senders
        self.router = router if router is not None else RtcpRouter()
        for sender in senders:
            self.router.add_sending(sender.ssrc, sender.rtcp)
        self._send_rtcp = send_rtcp
        self._cname = cname

    @property
    def invalid_rtcp(self) -> int:
        """RTCP datagrams on this connection that did not parse."""
        return self.router.invalid

    def send_reports(self, now: float) -> None:
        """One compound packet: an SR per stream that has sent, then SDES with the CNAME of each."""
        ntp = rtcp.ntp_from_unix(time.time())
        reports = [r for r in (s.sender_report(now, ntp) for s in self.senders) if r is not None]
        if not reports:
            return
        sdes = rtcp.Sdes(reports[0].ssrc, self._cname, [(r.ssrc, self._cname) for r in reports])
        self._send_rtcp(b"".join(bytes(r) for r in reports) + bytes(sdes))

    def send_bye(self) -> None:
        """RR + BYE for every stream (a compound packet must start with a report)."""
        ssrcs = [s.ssrc for s in self.senders]
        if ssrcs:
            self._send_rtcp(bytes(rtcp.ReceiverReport(ssrcs[0])) + bytes(rtcp.Bye(ssrcs)))

    def set_active_layers(self, layers: object, now: float) -> None:
        """The server's producerLayersActive: pause or resume each simulcast encoding by its RID (a bot publishes
        one simulcast track); entries that are not {"rid": str, "active": bool} are ignored."""
        if not isinstance(layers, list):
            return
        by_rid = {sender.rid: sender for sender in self.senders if sender.rid is not None}
        for layer in layers:
            if not isinstance(layer, dict) or not isinstance(layer.get("active"), bool):
                continue
            sender = by_rid.get(layer.get("rid"))  # type: ignore[arg-type]
            if sender is not None:
                sender.set_paused(not layer["active"], now)

    def stop(self) -> None:
        for sender in self.senders:
            sender.active = False
