"""Optional decoding (`--decode`): reassemble each complete frame of a consumer and decode it with PyAV,
to prove the content arrived intact. Costly (a real decoder per stream); off by default.

Depacketization: VP8 RFC 7741 (payload descriptor stripped), H.264 RFC 6184 (single NAL unit, STAP-A,
FU-A, to Annex B), Opus RFC 7587 (one packet, one frame).
"""

from __future__ import annotations

import av

from sfuctl.rtc.rtp import is_keyframe, seq_distance

MAX_BUFFERED = 256
_START_CODE = b"\x00\x00\x00\x01"
_H264_SPS = 7  # NAL unit type of a sequence parameter set


def vp8_data(payload: bytes) -> bytes:
    """The VP8 data of one RTP payload (its descriptor stripped); ValueError when the descriptor is truncated."""
    if not payload:
        raise ValueError("empty VP8 payload")
    first = payload[0]
    pos = 1
    if first & 0x80:
        if len(payload) < 2:
            raise ValueError("VP8 payload descriptor truncated")
        ext = payload[1]
        pos = 2
        if ext & 0x80:
            if pos >= len(payload):
                raise ValueError("VP8 payload descriptor truncated")
            pos += 2 if payload[pos] & 0x80 else 1
        if ext & 0x40:
            pos += 1
        if ext & 0x30:
            pos += 1
    if pos > len(payload):
        raise ValueError("VP8 payload descriptor truncated")
    return payload[pos:]


def h264_annex_b(payload: bytes) -> bytes:
    """The Annex B bytes of one RTP payload (a FU-A fragment after the first adds its data only)."""
    if not payload:
        raise ValueError("empty H.264 payload")
    nal_type = payload[0] & 0x1F
    if nal_type == 24:  # STAP-A
        units, pos = [], 1
        while pos + 2 <= len(payload):
            size = int.from_bytes(payload[pos : pos + 2], "big")
            pos += 2
            if size == 0 or pos + size > len(payload):
                raise ValueError("H.264 STAP-A unit exceeds the payload")
            units.append(_START_CODE + payload[pos : pos + size])
            pos += size
        return b"".join(units)
    if nal_type == 28:  # FU-A
        if len(payload) < 2:
            raise ValueError("H.264 FU-A truncated")
        if payload[1] & 0x80:
            header = bytes([(payload[0] & 0xE0) | (payload[1] & 0x1F)])
            return _START_CODE + header + payload[2:]
        return payload[2:]
    return _START_CODE + payload


def starts_keyframe(codec: str, payload: bytes) -> bool:
    """True when the RTP payload is the first packet of a keyframe: for VP8 the start of its first partition,
    for H.264 the packet whose first NAL unit is the sequence parameter set (an IDR slice decodes only after
    its parameter sets, which come first in the access unit)."""
    if codec == "VP8":
        return is_keyframe(codec, payload)
    if len(payload) < 2:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type == 24:  # STAP-A: 16-bit size, then the first NAL unit
        return len(payload) > 3 and payload[3] & 0x1F == _H264_SPS
    if nal_type == 28:  # FU-A: the start fragment names the unit's type
        return bool(payload[1] & 0x80) and payload[1] & 0x1F == _H264_SPS
    return nal_type == _H264_SPS


class FrameDecoder:
    """Decodes a consumer's frames in sequence order: from a keyframe on, each frame runs from the packet after
    the previous marker to its own marker. Packets that come before the keyframe's first one are kept, so a
    retransmitted first packet still starts the frame its later packets belong to. When MAX_BUFFERED packets
    wait behind a gap, the decoder gives up on it and resumes at the next keyframe (the receiver's PLI brings
    one)."""

    def __init__(self, codec: str) -> None:
        self.codec = codec
        self.decoded = 0
        self.errors = 0
        self.given_up = 0  # gaps skipped
        self.size: tuple[int, int] | None = None
        self._context = av.CodecContext.create({"VP8": "vp8", "H264": "h264", "opus": "libopus"}[codec], "r")
        self._depacketize = vp8_data if codec == "VP8" else h264_annex_b
        self._buffer: dict[int, tuple[bool, bytes]] = {}  # sequence -> (marker, payload)
        self._next: int | None = None  # first sequence of the next frame to decode

    def on_packet(self, sequence: int, marker: bool, payload: bytes) -> None:
        if self.codec == "opus":
            self._decode(payload)
            return
        buffer = self._buffer
        if self._next is None:  # waiting for the first packet of a keyframe
            if len(buffer) >= MAX_BUFFERED:
                buffer.clear()
            buffer[sequence] = (marker, payload)
            if not starts_keyframe(self.codec, payload):
                return
            self._next = sequence
            for earlier in [s for s in buffer if seq_distance(s, sequence) < 0]:
                del buffer[earlier]
        elif seq_distance(sequence, self._next) < 0:
            return  # a late copy of a packet already decoded or given up
        buffer[sequence] = (marker, payload)
        while self._decode_next():
            pass
        if len(buffer) > MAX_BUFFERED:
            self.given_up += 1
            buffer.clear()
            self._next = None

    def _decode_next(self) -> bool:
        """Decode the frame starting at self._next if all its packets are in; True when one was decoded."""
        buffer = self._buffer
        sequence = self._next
        if sequence is None:
            return False
        count = 0
        while True:
            item = buffer.get((sequence + count) & 0xFFFF)
            if item is None:
                return False
            count += 1
            if item[0]:
                break
        parts = [buffer.pop((sequence + i) & 0xFFFF)[1] for i in range(count)]
        self._next = (sequence + count) & 0xFFFF
        try:
            data = b"".join(self._depacketize(part) for part in parts)
        except ValueError:
            self.errors += 1
            return True
        self._decode(data)
        return True

    def _decode(self, data: bytes) -> None:
        try:
            frames = self._context.decode(av.Packet(data))
        except av.error.FFmpegError:
            self.errors += 1
            return
        for frame in frames:
            self.decoded += 1
            if isinstance(frame, av.VideoFrame):
                self.size = (frame.width, frame.height)

    def stats(self) -> dict:
        return {
            "decoded_frames": self.decoded,
            "decode_errors": self.errors,
            "gaps_given_up": self.given_up,
            "decoded_size": f"{self.size[0]}x{self.size[1]}" if self.size else None,
        }
