"""RTP packet core: header parsing (RFC 3550), header extensions (RFC 8285), sequence
arithmetic, keyframe detection for VP8 (RFC 7741) and H.264 (RFC 6184)."""

from __future__ import annotations

import struct
from collections.abc import Iterator

RTP_HEADER_SIZE = 12
ONE_BYTE_PROFILE = 0xBEDE
TWO_BYTE_PROFILE = 0x1000

_FIXED = struct.Struct("!BBHII")
_EXT_HEADER = struct.Struct("!HH")
_U16 = struct.Struct("!H")


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 demultiplexing: RTCP when the second byte (packet type) is 192..223."""
    return len(data) >= 2 and 192 <= data[1] <= 223


def read_header(data: bytes) -> tuple[int, int, int, int, int, int]:
    """Return (marker, payload_type, sequence, timestamp, ssrc, payload_offset).

    payload_offset points past the fixed header, the CSRC list and the header extension block.
    """
    length = len(data)
    if length < RTP_HEADER_SIZE:
        raise ValueError(f"RTP packet too short: {length} bytes")
    first, second, sequence, timestamp, ssrc = _FIXED.unpack_from(data)
    if first >> 6 != 2:
        raise ValueError(f"unsupported RTP version {first >> 6}")
    offset = RTP_HEADER_SIZE + 4 * (first & 0x0F)
    if offset > length:
        raise ValueError("RTP CSRC list exceeds packet")
    if first & 0x10:
        if offset + 4 > length:
            raise ValueError("RTP header extension exceeds packet")
        offset += 4 + 4 * _U16.unpack_from(data, offset + 2)[0]
        if offset > length:
            raise ValueError("RTP header extension exceeds packet")
    if first & 0x20:
        padding = data[-1]
        if padding == 0 or offset + padding > length:
            raise ValueError("RTP padding exceeds payload")
    return second >> 7, second & 0x7F, sequence, timestamp, ssrc, offset


def padding_size(data: bytes) -> int:
    """Number of padding bytes at the end of the packet (0 when the P bit is clear)."""
    if len(data) < RTP_HEADER_SIZE:
        raise ValueError(f"RTP packet too short: {len(data)} bytes")
    return data[-1] if data[0] & 0x20 else 0


def is_padding_only(first_byte: int, payload: bytes) -> bool:
    """True when an RTP payload (all after the header, padding included) is nothing but padding (RFC 3550 5.1): a
    sender's bandwidth probe (libwebrtc sends them on a video SSRC when no RTX is negotiated), not media."""
    return bool(first_byte & 0x20) and payload[-1] == len(payload)


def read_extensions(data: bytes) -> dict[int, bytes]:
    """Parse the RFC 8285 header extensions of a packet into {id: value}.

    Returns {} when the packet has no extension block or one with another profile.
    """
    read_header(data)
    first = data[0]
    if not first & 0x10:
        return {}
    start = RTP_HEADER_SIZE + 4 * (first & 0x0F)
    profile, words = _EXT_HEADER.unpack_from(data, start)
    pos = start + 4
    end = pos + 4 * words
    if profile == ONE_BYTE_PROFILE:
        return _read_elements(data, pos, end, one_byte=True)
    if profile & 0xFFF0 == TWO_BYTE_PROFILE:
        return _read_elements(data, pos, end, one_byte=False)
    return {}


def _read_elements(data: bytes, pos: int, end: int, one_byte: bool) -> dict[int, bytes]:
    return {ext_id: bytes(data[value : value + size]) for ext_id, value, size in _elements(data, pos, end, one_byte)}


def _elements(data: bytes | bytearray, pos: int, end: int, one_byte: bool) -> Iterator[tuple[int, int, int]]:
    """(id, value offset, value length) of each element of an extension block; ValueError if one overruns it."""
    while pos < end:
        byte = data[pos]
        if byte == 0:
            pos += 1
            continue
        if one_byte:
            ext_id, size = byte >> 4, (byte & 0x0F) + 1
            if ext_id == 15:  # reserved: stop reading (RFC 8285 section 4.2)
                return
            pos += 1
        else:
            if pos + 2 > end:
                raise ValueError("RTP header extension element exceeds block")
            ext_id, size = byte, data[pos + 1]
            pos += 2
        if pos + size > end:
            raise ValueError("RTP header extension element exceeds block")
        yield ext_id, pos, size
        pos += size


def find_extension(data: bytes | bytearray, ext_id: int) -> int:
    """The offset of the value of header extension `ext_id` in an RTP packet whose header is valid
    (read_header), or -1 when it is absent or its block is malformed (RFC 8285 one- or two-byte elements)."""
    first = data[0]
    if not first & 0x10:
        return -1
    start = RTP_HEADER_SIZE + 4 * (first & 0x0F)
    profile, words = _EXT_HEADER.unpack_from(data, start)
    one_byte = profile == ONE_BYTE_PROFILE
    if not one_byte and profile & 0xFFF0 != TWO_BYTE_PROFILE:
        return -1
    try:
        for element_id, value, _ in _elements(data, start + 4, start + 4 + 4 * words, one_byte):
            if element_id == ext_id:
                return value
    except ValueError:
        return -1
    return -1


def build_extension_block(items: list[tuple[int, bytes]]) -> bytes:
    """Serialize header extensions as a complete block (profile word, elements, zero padding)."""
    if not items:
        return b""
    if all(1 <= ext_id <= 14 and 1 <= len(value) <= 16 for ext_id, value in items):
        profile = ONE_BYTE_PROFILE
        body = b"".join(bytes([(ext_id << 4) | (len(value) - 1)]) + value for ext_id, value in items)
    else:
        for ext_id, value in items:
            if not 1 <= ext_id <= 255 or len(value) > 255:
                raise ValueError(f"invalid RTP header extension id {ext_id} or length {len(value)}")
        profile = TWO_BYTE_PROFILE
        body = b"".join(bytes([ext_id, len(value)]) + value for ext_id, value in items)
    body += b"\x00" * (-len(body) % 4)
    return _EXT_HEADER.pack(profile, len(body) // 4) + body


def seq_distance(a: int, b: int) -> int:
    """Signed distance a - b modulo 2^16, in -32768..32767."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def seq_newer(a: int, b: int) -> bool:
    """True when sequence number a comes after b modulo 2^16."""
    return seq_distance(a, b) > 0


def is_keyframe(codec: str, payload: bytes) -> bool:
    """True when the RTP payload starts (VP8) or carries (H.264 IDR/SPS) a keyframe."""
    name = codec.upper()
    if name == "VP8":
        return _vp8_keyframe(payload)
    if name == "H264":
        return _h264_keyframe(payload)
    return False


def _vp8_keyframe(payload: bytes) -> bool:
    length = len(payload)
    if length < 1:
        return False
    first = payload[0]
    if not first & 0x10 or first & 0x07:  # S=1 and PID=0: start of the first partition
        return False
    pos = 1
    if first & 0x80:  # X: extended control bits
        if length < 2:
            return False
        ext = payload[1]
        pos = 2
        if ext & 0x80:  # I: PictureID, 15 bits when M is set
            if pos >= length:
                return False
            pos += 2 if payload[pos] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            pos += 1
        if ext & 0x30:  # T or K: TID/Y/KEYIDX byte
            pos += 1
    return pos < length and not payload[pos] & 0x01


_H264_KEY_TYPES = (5, 7)


def _h264_keyframe(payload: bytes) -> bool:
    length = len(payload)
    if length < 1:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type == 24:  # STAP-A: 16-bit size + NAL unit, repeated
        pos = 1
        while pos + 2 < length:
            size = _U16.unpack_from(payload, pos)[0]
            pos += 2
            if size == 0 or pos + size > length:
                return False
            if payload[pos] & 0x1F in _H264_KEY_TYPES:
                return True
            pos += size
        return False
    if nal_type == 28:  # FU-A: key only at the start fragment
        return length >= 2 and bool(payload[1] & 0x80) and payload[1] & 0x1F in _H264_KEY_TYPES
    return nal_type in _H264_KEY_TYPES


def build_packet(
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    payload: bytes,
    marker: bool = False,
    extensions: bytes = b"",
) -> bytes:
    """Build an RTP packet; `extensions` is a block from build_extension_block()."""
    if not 0 <= payload_type <= 127:
        raise ValueError(f"invalid RTP payload type {payload_type}")
    if len(extensions) % 4:
        raise ValueError("RTP header extension block must be a multiple of 4 bytes")
    first = 0x90 if extensions else 0x80
    second = (0x80 if marker else 0) | payload_type
    return _FIXED.pack(first, second, sequence, timestamp, ssrc) + extensions + payload
