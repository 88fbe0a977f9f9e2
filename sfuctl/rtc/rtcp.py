"""RTCP packets: RFC 3550 SR/RR/SDES/BYE, RFC 4585 NACK/PLI, RFC 5104 FIR, REMB, transport-wide feedback
(transport_feedback.py); NTP clock helpers."""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field

from .transport_feedback import FMT_TRANSPORT_CC, TransportFeedback

RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
RTCP_RTPFB = 205
RTCP_PSFB = 206

FMT_NACK = 1
FMT_PLI = 1
FMT_FIR = 4
FMT_AFB = 15

SDES_CNAME = 1
NTP_UNIX_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01

_HEADER = struct.Struct("!BBH")
_BLOCK = struct.Struct("!IIIIII")
_SR_INFO = struct.Struct("!IQIII")
_U32 = struct.Struct("!I")
_TWO_U32 = struct.Struct("!II")
_NACK_PAIR = struct.Struct("!HH")
_FIR_ENTRY = struct.Struct("!IB3x")
_REMB_ID = b"REMB"


def _packet(count: int, packet_type: int, body: bytes) -> bytes:
    """Prefix a 32-bit aligned body with the common RTCP header."""
    if not 0 <= count <= 31:
        raise ValueError(f"RTCP count {count} exceeds 31")
    return _HEADER.pack(0x80 | count, packet_type, len(body) // 4) + body


def _bounds(data: bytes, offset: int) -> tuple[int, int, int, int, int]:
    """Return (count/fmt, packet type, body start, body end without padding, next packet offset)."""
    if offset + 4 > len(data):
        raise ValueError("RTCP packet too short")
    first, packet_type, words = _HEADER.unpack_from(data, offset)
    if first >> 6 != 2:
        raise ValueError(f"unsupported RTCP version {first >> 6}")
    following = offset + 4 * (words + 1)
    if following > len(data):
        raise ValueError("RTCP length field exceeds data")
    end = following
    if first & 0x20:
        padding = data[following - 1]
        if padding == 0 or padding > following - offset - 4:
            raise ValueError("RTCP padding exceeds packet")
        end -= padding
    return first & 0x1F, packet_type, offset + 4, end, following


def _expect(packet_type: int, wanted: int, name: str) -> None:
    if packet_type != wanted:
        raise ValueError(f"not an RTCP {name} packet (type {packet_type})")


@dataclass
class ReportBlock:
    """One reception report block (RFC 3550 6.4.1)."""

    ssrc: int
    fraction_lost: int
    packets_lost: int
    highest_sequence: int
    jitter: int
    lsr: int
    dlsr: int

    SIZE = 24

    def __bytes__(self) -> bytes:
        if not 0 <= self.fraction_lost <= 255:
            raise ValueError(f"fraction_lost {self.fraction_lost} outside 0..255")
        if not -0x800000 <= self.packets_lost <= 0x7FFFFF:
            raise ValueError(f"packets_lost {self.packets_lost} outside the signed 24-bit range")
        return _BLOCK.pack(
            self.ssrc,
            (self.fraction_lost << 24) | (self.packets_lost & 0xFFFFFF),
            self.highest_sequence,
            self.jitter,
            self.lsr,
            self.dlsr,
        )

    @classmethod
    def parse(cls, data: bytes) -> ReportBlock:
        if len(data) < cls.SIZE:
            raise ValueError("RTCP report block too short")
        return _read_block(data, 0)


def _read_block(data: bytes, pos: int) -> ReportBlock:
    ssrc, lost_word, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(data, pos)
    lost = lost_word & 0xFFFFFF
    if lost & 0x800000:
        lost -= 0x1000000
    return ReportBlock(ssrc, lost_word >> 24, lost, highest, jitter, lsr, dlsr)


def _read_blocks(data: bytes, pos: int, end: int, count: int) -> list[ReportBlock]:
    if pos + count * ReportBlock.SIZE > end:
        raise ValueError("RTCP report count exceeds packet length")
    return [_read_block(data, pos + i * ReportBlock.SIZE) for i in range(count)]


@dataclass
class SenderReport:
    """RTCP SR (PT 200)."""

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: list[ReportBlock] = field(default_factory=list)

    def __bytes__(self) -> bytes:
        body = _SR_INFO.pack(
            self.ssrc, self.ntp_timestamp, self.rtp_timestamp, self.packet_count, self.octet_count
        )
        return _packet(len(self.reports), RTCP_SR, body + b"".join(bytes(r) for r in self.reports))

    @classmethod
    def parse(cls, data: bytes) -> SenderReport:
        count, packet_type, start, end, _ = _bounds(data, 0)
        _expect(packet_type, RTCP_SR, "SR")
        return cls._decode(count, data, start, end)

    @classmethod
    def _decode(cls, count: int, data: bytes, start: int, end: int) -> SenderReport:
        if start + _SR_INFO.size > end:
            raise ValueError("RTCP SR too short")
        ssrc, ntp, rtp, packets, octets = _SR_INFO.unpack_from(data, start)
        reports = _read_blocks(data, start + _SR_INFO.size, end, count)
        return cls(ssrc, ntp, rtp, packets, octets, reports)


@dataclass
class ReceiverReport:
    """RTCP RR (PT 201)."""

    ssrc: int
    reports: list[ReportBlock] = field(default_factory=list)

    def __bytes__(self) -> bytes:
        body = _U32.pack(self.ssrc) + b"".join(bytes(r) for r in self.reports)
        return _packet(len(self.reports), RTCP_RR, body)

    @classmethod
    def parse(cls, data: bytes) -> ReceiverReport:
        count, packet_type, start, end, _ = _bounds(data, 0)
        _expect(packet_type, RTCP_RR, "RR")
        return cls._decode(count, data, start, end)

    @classmethod
    def _decode(cls, count: int, data: bytes, start: int, end: int) -> ReceiverReport:
        if start + 4 > end:
            raise ValueError("RTCP RR too short")
        return cls(_U32.unpack_from(data, start)[0], _read_blocks(data, start + 4, end, count))


@dataclass
class Sdes:
    """RTCP SDES (PT 202) reduced to CNAMEs.

    Serializes `chunks` when non-empty, else one chunk (ssrc, cname). Parsing keeps the first CNAME of
    each chunk in `chunks` and the first of them in ssrc/cname.
    """

    ssrc: int
    cname: str
    chunks: list[tuple[int, str]] = field(default_factory=list)

    def __bytes__(self) -> bytes:
        chunks = self.chunks or [(self.ssrc, self.cname)]
        body = b""
        for ssrc, cname in chunks:
            text = cname.encode()
            if len(text) > 255:
                raise ValueError("SDES CNAME longer than 255 bytes")
            chunk = _U32.pack(ssrc) + bytes([SDES_CNAME, len(text)]) + text + b"\x00"
            body += chunk + b"\x00" * (-len(chunk) % 4)
        return _packet(len(chunks), RTCP_SDES, body)

    @classmethod
    def parse(cls, data: bytes) -> Sdes:
        count, packet_type, start, end, _ = _bounds(data, 0)
        _expect(packet_type, RTCP_SDES, "SDES")
        return cls._decode(count, data, start, end)

    @classmethod
    def _decode(cls, count: int, data: bytes, start: int, end: int) -> Sdes:
        chunks: list[tuple[int, str]] = []
        pos = start
        for _ in range(count):
            if pos + 4 > end:
                raise ValueError("RTCP SDES chunk exceeds packet length")
            ssrc = _U32.unpack_from(data, pos)[0]
            pos += 4
            cname = None
            while True:
                if pos >= end:
                    raise ValueError("RTCP SDES chunk exceeds packet length")
                item = data[pos]
                if item == 0:
                    pos += 1 + (-(pos + 1 - start) % 4)
                    break
                if pos + 2 > end or pos + 2 + data[pos + 1] > end:
                    raise ValueError("RTCP SDES item exceeds packet length")
                size = data[pos + 1]
                if item == SDES_CNAME and cname is None:
                    cname = bytes(data[pos + 2 : pos + 2 + size]).decode(errors="replace")
                pos += 2 + size
            if cname is not None:
                chunks.append((ssrc, cname))
        ssrc, cname = chunks[0] if chunks else (0, "")
        return cls(ssrc, cname, chunks)


@dataclass
class Bye:
    """RTCP BYE (PT 203); the optional reason is neither built nor kept."""

    sources: list[int]

    def __bytes__(self) -> bytes:
        return _packet(len(self.sources), RTCP_BYE, b"".join(_U32.pack(s) for s in self.sources))

    @classmethod
    def parse(cls, data: bytes) -> Bye:
        count, packet_type, start, end, _ = _bounds(data, 0)
        _expect(packet_type, RTCP_BYE, "BYE")
        return cls._decode(count, data, start, end)

    @classmethod
    def _decode(cls, count: int, data: bytes, start: int, end: int) -> Bye:
        if start + 4 * count > end:
            raise ValueError("RTCP BYE source count exceeds packet length")
        return cls([_U32.unpack_from(data, start + 4 * i)[0] for i in range(count)])


def _feedback_ssrcs(data: bytes, start: int, end: int) -> tuple[int, int]:
    if start + 8 > end:
        raise ValueError("RTCP feedback packet too short")
    return _TWO_U32.unpack_from(data, start)


def _expect_feedback(data: bytes, packet_type: int, fmt: int, name: str) -> tuple[int, int]:
    count, actual_type, start, end, _ = _bounds(data, 0)
    if actual_type != packet_type or count != fmt:
        raise ValueError(f"not an RTCP {name} packet (type {actual_type}, FMT {count})")
    return start, end


def _pack_nack_pairs(lost: list[int]) -> bytes:
    """Pack sequence numbers into PID+BLP pairs; BLP bit i means PID + i + 1 (mod 2^16)."""
    pairs = b""
    pid = lost[0] & 0xFFFF
    blp = 0
    for sequence in lost[1:]:
        distance = (sequence - pid) & 0xFFFF
        if distance == 0:
            continue
        if distance <= 16:
            blp |= 1 << (distance - 1)
        else:
            pairs += _NACK_PAIR.pack(pid, blp)
            pid, blp = sequence & 0xFFFF, 0
    return pairs + _NACK_PAIR.pack(pid, blp)


@dataclass
class Nack:
    """Generic NACK (RTPFB FMT 1, RFC 4585 6.2.1)."""

    sender_ssrc: int
    media_ssrc: int
    lost: list[int]

    def __bytes__(self) -> bytes:
        if not self.lost:
            raise ValueError("NACK needs at least one sequence number")
        body = _TWO_U32.pack(self.sender_ssrc, self.media_ssrc) + _pack_nack_pairs(self.lost)
        return _packet(FMT_NACK, RTCP_RTPFB, body)

    @classmethod
    def parse(cls, data: bytes) -> Nack:
        start, end = _expect_feedback(data, RTCP_RTPFB, FMT_NACK, "NACK")
        return cls._decode(FMT_NACK, data, start, end)

    @classmethod
    def _decode(cls, count: int, data: bytes, start: int, end: int) -> Nack:
        sender, media = _feedback_ssrcs(data, start, end)
        if (end - start - 8) % 4:
            raise ValueError("RTCP NACK FCI length is not a multiple of 4")
        lost: list[int] = []
        for pos in range(start + 8, end, 4):
            pid, blp = _NACK_PAIR.unpack_from(data, pos)
            lost.append(pid)
            lost.extend((pid + bit + 1) & 0xFFFF for bit in range(16) if blp >> bit & 1)
        return cls(sender, media, lost)


@dataclass
class Pli:
    """Picture Loss Indication (PSFB FMT 1, RFC 4585 6.3.1)."""

    sender_ssrc: int
    media_ssrc: int

    def __bytes__(self) -> bytes:
        return _packet(FMT_PLI, RTCP_PSFB, _TWO_U32.pack(self.sender_ssrc, self.media_ssrc))

    @classmethod
    def parse(cls, data: bytes) -> Pli:
        start, end = _expect_feedback(data, RTCP_PSFB, FMT_PLI, "PLI")
        return cls._decode(FMT_PLI, data, start, end)

    @classmethod
    def _decode(cls, count: int, data: bytes, start: int, end: int) -> Pli:
        return cls(*_feedback_ssrcs(data, start, end))


@dataclass
class Fir:
    """Full Intra Request (PSFB FMT 4, RFC 5104 4.3.1); entries are (media ssrc, command seq nr)."""

    sender_ssrc: int
    entries: list[tuple[int, int]]

    def __bytes__(self) -> bytes:
        fci = b"".join(_FIR_ENTRY.pack(ssrc, seq & 0xFF) for ssrc, seq in self.entries)
        return _packet(FMT_FIR, RTCP_PSFB, _TWO_U32.pack(self.sender_ssrc, 0) + fci)

    @classmethod
    def parse(cls, data: bytes) -> Fir:
        start, end = _expect_feedback(data, RTCP_PSFB, FMT_FIR, "FIR")
        return cls._decode(FMT_FIR, data, start, end)

    @classmethod
    def _decode(cls, count: int, data: bytes, start: int, end: int) -> Fir:
        sender, _ = _feedback_ssrcs(data, start, end)
        if (end - start - 8) % _FIR_ENTRY.size:
            raise ValueError("RTCP FIR FCI length is not a multiple of 8")
        entries = [_FIR_ENTRY.unpack_from(data, pos) for pos in range(start + 8, end, _FIR_ENTRY.size)]
        return cls(sender, entries)


@dataclass
class Remb:
    """Receiver Estimated Maximum Bitrate (PSFB FMT 15, draft-alvestrand-rmcat-remb)."""

    sender_ssrc: int
    bitrate: int
    ssrcs: list[int]

    def __bytes__(self) -> bytes:
        if len(self.ssrcs) > 255:
            raise ValueError("REMB carries at most 255 SSRCs")
        mantissa, exponent = self.bitrate, 0
        while mantissa >= 1 << 18:
            mantissa >>= 1
            exponent += 1
        if mantissa < 0 or exponent > 63:
            raise ValueError(f"REMB bitrate {self.bitrate} out of range")
        word = (len(self.ssrcs) << 24) | (exponent << 18) | mantissa
        body = _TWO_U32.pack(self.sender_ssrc, 0) + _REMB_ID + _U32.pack(word)
        return _packet(FMT_AFB, RTCP_PSFB, body + b"".join(_U32.pack(s) for s in self.ssrcs))

    @classmethod
    def parse(cls, data: bytes) -> Remb:
        start, end = _expect_feedback(data, RTCP_PSFB, FMT_AFB, "REMB")
        if not _is_remb(data, start, end):
            raise ValueError("RTCP application layer feedback is not REMB")
        return cls._decode(FMT_AFB, data, start, end)

    @classmethod
    def _decode(cls, count: int, data: bytes, start: int, end: int) -> Remb:
        sender, _ = _feedback_ssrcs(data, start, end)
        if start + 16 > end:
            raise ValueError("RTCP REMB too short")
        word = _U32.unpack_from(data, start + 12)[0]
        count = word >> 24
        if start + 16 + 4 * count > end:
            raise ValueError("RTCP REMB SSRC count exceeds packet length")
        bitrate = (word & 0x3FFFF) << ((word >> 18) & 0x3F)
        ssrcs = [_U32.unpack_from(data, start + 16 + 4 * i)[0] for i in range(count)]
        return cls(sender, bitrate, ssrcs)


def _is_remb(data: bytes, start: int, end: int) -> bool:
    return start + 12 <= end and data[start + 8 : start + 12] == _REMB_ID


RtcpPacket = SenderReport | ReceiverReport | Sdes | Bye | Nack | Pli | Fir | Remb | TransportFeedback


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Parse every known packet of a (compound) RTCP datagram; unknown types and FMTs are skipped."""
    packets: list[RtcpPacket] = []
    offset = 0
    while offset < len(data):
        count, packet_type, start, end, offset = _bounds(data, offset)
        decoder = _decoder(packet_type, count, data, start, end)
        if decoder is not None:
            packets.append(decoder._decode(count, data, start, end))
    return packets


def _decoder(packet_type: int, count: int, data: bytes, start: int, end: int) -> type | None:
    if packet_type == RTCP_SR:
        return SenderReport
    if packet_type == RTCP_RR:
        return ReceiverReport
    if packet_type == RTCP_SDES:
        return Sdes
    if packet_type == RTCP_BYE:
        return Bye
    if packet_type == RTCP_RTPFB:
        if count == FMT_NACK:
            return Nack
        if count == FMT_TRANSPORT_CC:
            return TransportFeedback
    if packet_type == RTCP_PSFB:
        if count == FMT_PLI:
            return Pli
        if count == FMT_FIR:
            return Fir
        if count == FMT_AFB and _is_remb(data, start, end):
            return Remb
    return None


def ntp_from_unix(t: float) -> int:
    """64-bit NTP timestamp (32.32 fixed point since 1900) of a Unix time in seconds."""
    seconds = int(t // 1)
    fraction = int((t - seconds) * 4294967296.0)
    return (((seconds + NTP_UNIX_OFFSET) << 32) | fraction) & 0xFFFFFFFFFFFFFFFF


def ntp_now() -> int:
    """64-bit NTP timestamp of the current wall clock."""
    return ntp_from_unix(time.time())


def ntp_middle(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp (the LSR field, 1/65536 s units)."""
    return (ntp >> 16) & 0xFFFFFFFF


def rtt_ms(lsr: int, dlsr: int, arrival_ntp_middle: int) -> float | None:
    """Round-trip time from a report block (RFC 3550 6.4.1): A - LSR - DLSR; None when LSR is 0."""
    if lsr == 0:
        return None
    rtt = (arrival_ntp_middle - lsr - dlsr) & 0xFFFFFFFF
    if rtt & 0x80000000:
        return 0.0
    return rtt * 1000.0 / 65536.0
