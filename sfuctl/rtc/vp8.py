"""The VP8 payload descriptor (RFC 7741 section 4.2): read it, and rewrite PictureID / TL0PICIDX in place.

A simulcast consumer forwards packets of several encodings as one stream; each encoding numbers its pictures
on its own, so the consumer rewrites PictureID and TL0PICIDX to continue its own numbering (a decoder takes a
jump in PictureID for lost pictures). The descriptor is read from the payload, never decoded further, except
for a keyframe's frame size (RFC 6386 section 9.1), which tells a receiver which layer it gets.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

# X, I, L, T, K bits of the first and extension bytes (RFC 7741 4.2).
_X = 0x80
_S = 0x10
_PID_MASK = 0x07
_I = 0x80
_L = 0x40
_T = 0x20
_K = 0x10
_M = 0x80  # the PictureID is 15 bits when the high bit of its first byte is set
# A keyframe's uncompressed data chunk: 3-byte frame tag, then the start code 9d 01 2a, then 2+2 bytes of size.
_START_CODE = b"\x9d\x01\x2a"
_KEYFRAME_HEADER = 10
_pack_u16 = struct.Struct("!H").pack_into


class Vp8Descriptor(NamedTuple):
    """What a forwarder needs from one packet's descriptor; offsets are into the payload, -1 when absent.

    picture_id_bits is 7 or 15 (0 without PictureID); tid is None without a TID field. A tuple: made once per
    packet on the forwarding path, where a tuple is the cheapest object Python builds.
    """

    start: bool
    partition: int
    keyframe: bool
    picture_id: int | None
    picture_id_bits: int
    picture_id_offset: int
    tl0picidx: int | None
    tl0picidx_offset: int
    tid: int | None
    layer_sync: bool
    size: int  # descriptor length: the VP8 payload starts here

    @property
    def frame_start(self) -> bool:
        """True on the first packet of a frame (S=1 and partition 0)."""
        return self.start and self.partition == 0


def parse_descriptor(payload: bytes) -> Vp8Descriptor:
    """Read the descriptor at the start of a VP8 RTP payload; ValueError when it is truncated."""
    length = len(payload)
    if length < 1:
        raise ValueError("VP8 payload is empty")
    first = payload[0]
    pos = 1
    picture_id = tl0 = tid = None
    bits = 0
    pid_offset = tl0_offset = -1
    sync = False
    if first & _X:
        if length < 2:
            raise ValueError("VP8 descriptor truncated after the X byte")
        ext = payload[1]
        pos = 2
        if ext & _I:
            if pos >= length:
                raise ValueError("VP8 descriptor truncated in PictureID")
            pid_offset = pos
            if payload[pos] & _M:
                if pos + 2 > length:
                    raise ValueError("VP8 descriptor truncated in PictureID")
                picture_id, bits = ((payload[pos] & 0x7F) << 8) | payload[pos + 1], 15
                pos += 2
            else:
                picture_id, bits = payload[pos] & 0x7F, 7
                pos += 1
        if ext & _L:
            if pos >= length:
                raise ValueError("VP8 descriptor truncated in TL0PICIDX")
            tl0, tl0_offset = payload[pos], pos
            pos += 1
        if ext & (_T | _K):
            if pos >= length:
                raise ValueError("VP8 descriptor truncated in TID/KEYIDX")
            if ext & _T:
                tid = payload[pos] >> 6
                sync = bool(payload[pos] & 0x20)
            pos += 1
    start = bool(first & _S)
    partition = first & _PID_MASK
    # P bit (inverse key frame flag) of the frame tag, only meaningful at the start of partition 0.
    keyframe = start and partition == 0 and pos < length and not payload[pos] & 0x01
    return Vp8Descriptor(start, partition, keyframe, picture_id, bits, pid_offset, tl0, tl0_offset, tid, sync, pos)


def keyframe_size(payload: bytes) -> tuple[int, int] | None:
    """(width, height) from the first packet of a VP8 keyframe; None for any other packet."""
    try:
        d = parse_descriptor(payload)
    except ValueError:
        return None
    if not d.keyframe:
        return None
    frame = payload[d.size : d.size + _KEYFRAME_HEADER]
    if len(frame) < _KEYFRAME_HEADER or frame[3:6] != _START_CODE:
        return None
    width = int.from_bytes(frame[6:8], "little") & 0x3FFF
    height = int.from_bytes(frame[8:10], "little") & 0x3FFF
    return width, height


def renumbered(head: bytes, d: Vp8Descriptor, pid_offset: int, tl0_offset: int) -> bytearray:
    """A copy of `head` (d's descriptor) with the offsets added to its PictureID and TL0PICIDX (fields the
    descriptor lacks stay absent; a 7-bit PictureID keeps its width, taken modulo 128)."""
    copy = bytearray(head)
    renumber(copy, 0, d, pid_offset, tl0_offset)
    return copy


def renumber(buffer: bytearray, at: int, d: Vp8Descriptor, pid_offset: int, tl0_offset: int) -> None:
    """Hot path: buffer[at:] holds a copy of d's descriptor; add the offsets to its PictureID (keeping its width)
    and TL0PICIDX. A forwarder keeps the copy right after its RTP header and joins the rest of the payload."""
    picture_id = d.picture_id
    if picture_id is not None:
        if d.picture_id_bits == 15:
            _pack_u16(buffer, at + d.picture_id_offset, 0x8000 | (picture_id + pid_offset) & 0x7FFF)
        else:
            buffer[at + d.picture_id_offset] = (picture_id + pid_offset) & 0x7F
    tl0picidx = d.tl0picidx
    if tl0picidx is not None:
        buffer[at + d.tl0picidx_offset] = (tl0picidx + tl0_offset) & 0xFF


class PictureNumbering:
    """One outgoing VP8 stream's PictureID and TL0PICIDX, continuous across switches between source encodings.

    `rebase` at the first packet forwarded from a (new) source; `map` then gives the outgoing values for each
    packet of that source: the source's own increments are kept, shifted to follow what was sent last. The
    forwarder `note`s the newest packet it sends (a reference, nothing computed per packet); retransmissions and
    late packets are not noted. Without first values, the first source keeps its own numbers (offsets 0).
    """

    __slots__ = ("pid_offset", "tl0_offset", "latest", "_last_pid", "_last_tl0")

    def __init__(self, first_picture_id: int | None = None, first_tl0picidx: int | None = None) -> None:
        self._last_pid = None if first_picture_id is None else (first_picture_id - 1) & 0x7FFF
        self._last_tl0 = None if first_tl0picidx is None else (first_tl0picidx - 1) & 0xFF
        self.latest: Vp8Descriptor | None = None  # the newest packet sent (see note)
        self.pid_offset = 0
        self.tl0_offset = 0

    def note(self, d: Vp8Descriptor) -> None:
        """Hot path: d is the newest packet sent."""
        self.latest = d

    def rebase(self, d: Vp8Descriptor) -> None:
        """Make the next picture of this source follow the last one sent (PictureID +1, TL0PICIDX +1)."""
        latest = self.latest
        if latest is not None:  # what was sent last, in the outgoing numbering
            if latest.picture_id is not None:
                self._last_pid = (latest.picture_id + self.pid_offset) & 0x7FFF
            if latest.tl0picidx is not None:
                self._last_tl0 = (latest.tl0picidx + self.tl0_offset) & 0xFF
            self.latest = None
        if d.picture_id is not None and self._last_pid is not None:
            self.pid_offset = (self._last_pid + 1 - d.picture_id) & 0x7FFF
        if d.tl0picidx is not None and self._last_tl0 is not None:
            self.tl0_offset = (self._last_tl0 + 1 - d.tl0picidx) & 0xFF

    def map(self, d: Vp8Descriptor) -> tuple[int | None, int | None]:
        """Outgoing (PictureID, TL0PICIDX) for a packet of the current source."""
        pid = None if d.picture_id is None else (d.picture_id + self.pid_offset) & 0x7FFF
        tl0 = None if d.tl0picidx is None else (d.tl0picidx + self.tl0_offset) & 0xFF
        return pid, tl0
