"""Transport-wide congestion control on the wire (draft-holmer-rmcat-transport-wide-cc-extensions-01): the
transport-cc RTP header extension (a 16-bit sequence shared by every packet of a transport) and the feedback
packet that reports, for a range of those sequences, which arrived and when (RTCP RTPFB, FMT 15).

A feedback packet is held as `arrivals`: one entry per sequence from `base_sequence`, the arrival time in
250 µs ticks on the receiver's clock (reference time x 256 plus the running sum of deltas), or None for a packet
not received. That keeps build and parse exact inverses; only differences between arrival times mean anything.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from .rtp import find_extension

TRANSPORT_CC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
RTCP_RTPFB = 205
FMT_TRANSPORT_CC = 15

# Receive deltas count 250 µs ticks; the reference time counts 64 ms (256 ticks), 24 bits signed on the wire.
TICKS_PER_SECOND = 4000
TICKS_PER_REFERENCE = 256
REFERENCE_MODULO = 1 << 24
# Packet status symbols (section 3.1.1): not received, received with a 1-byte delta, with a 2-byte delta.
NOT_RECEIVED = 0
SMALL_DELTA = 1
LARGE_DELTA = 2
# A 1-byte delta is unsigned, 0..255 ticks (0..63.75 ms); a 2-byte delta is signed 16-bit.
SMALL_DELTA_MAX = 0xFF
LARGE_DELTA_MIN = -0x8000
LARGE_DELTA_MAX = 0x7FFF
# Chunk capacities: a run-length chunk's 13-bit run, a status vector's 14 one-bit or 7 two-bit symbols.
RUN_LENGTH_MAX = 0x1FFF
# The most packet statuses one feedback packet may report: 2048 in a feedback interval (~100 ms) is ~20,000
# packets a second, beyond any real transport. A packet claiming more is refused before its statuses are
# expanded (run-length chunks of 2 bytes could otherwise make a 40-byte packet cost 65,535 list entries).
MAX_STATUS_COUNT = 2048
ONE_BIT_SYMBOLS = 14
TWO_BIT_SYMBOLS = 7

_HEADER = struct.Struct("!BBH")
_FIXED = struct.Struct("!IIHHI")  # sender ssrc, media ssrc, base sequence, status count, reference + count
_U16 = struct.Struct("!H")
_I16 = struct.Struct("!h")


def packet_sequence(packet: bytes, extension_id: int) -> int:
    """The transport-wide sequence of an RTP packet not yet validated, or -1 when it has none (or a header
    extension block that overruns the packet)."""
    length = len(packet)
    if length < 16 or not packet[0] & 0x10:
        return -1
    start = 12 + 4 * (packet[0] & 0x0F)
    if start + 4 > length or start + 4 + 4 * _U16.unpack_from(packet, start + 2)[0] > length:
        return -1
    offset = find_extension(packet, extension_id)
    return _U16.unpack_from(packet, offset)[0] if 0 <= offset <= length - 2 else -1


def read_sequence(packet: bytes | bytearray, offset: int) -> int:
    """The transport-wide sequence whose 2-byte value starts at `offset` (see rtp.find_extension)."""
    return _U16.unpack_from(packet, offset)[0]


def write_sequence(packet: bytearray, offset: int, sequence: int) -> None:
    """Patch the transport-wide sequence into the extension value at `offset`."""
    _U16.pack_into(packet, offset, sequence & 0xFFFF)


def extension_value(sequence: int) -> bytes:
    """The 2-byte extension value for rtp.build_extension_block."""
    return _U16.pack(sequence & 0xFFFF)


def delta_symbol(delta: int) -> int:
    """The status symbol a receive delta (in ticks) is sent with; ValueError when 16 bits cannot carry it."""
    if 0 <= delta <= SMALL_DELTA_MAX:
        return SMALL_DELTA
    if LARGE_DELTA_MIN <= delta <= LARGE_DELTA_MAX:
        return LARGE_DELTA
    raise ValueError(f"receive delta {delta} ticks does not fit 16 bits")


@dataclass
class TransportFeedback:
    """One transport-cc feedback packet (RTPFB FMT 15)."""

    sender_ssrc: int
    media_ssrc: int
    base_sequence: int
    reference_time: int  # 64 ms units, 24 bits
    feedback_count: int  # 8 bits, one more per packet sent
    arrivals: list[int | None] = field(default_factory=list)

    def received(self) -> Iterator[tuple[int, int]]:
        """(sequence, arrival ticks) of each packet reported received, in the order reported."""
        base = self.base_sequence
        for index, arrival in enumerate(self.arrivals):
            if arrival is not None:
                yield (base + index) & 0xFFFF, arrival

    def __bytes__(self) -> bytes:
        count = len(self.arrivals)
        if not 1 <= count <= 0xFFFF:
            raise ValueError(f"transport feedback must report 1..65535 packets, not {count}")
        if not 0 <= self.reference_time < REFERENCE_MODULO:
            raise ValueError(f"reference time {self.reference_time} outside 24 bits")
        previous = self.reference_time * TICKS_PER_REFERENCE
        symbols: list[int] = []
        deltas = bytearray()
        for arrival in self.arrivals:
            if arrival is None:
                symbols.append(NOT_RECEIVED)
                continue
            delta = arrival - previous
            previous = arrival
            symbol = delta_symbol(delta)
            symbols.append(symbol)
            deltas += bytes((delta,)) if symbol == SMALL_DELTA else _I16.pack(delta)
        body = _FIXED.pack(
            self.sender_ssrc,
            self.media_ssrc,
            self.base_sequence & 0xFFFF,
            count,
            (self.reference_time << 8) | (self.feedback_count & 0xFF),
        )
        body += b"".join(_U16.pack(chunk) for chunk in encode_chunks(symbols)) + deltas
        padding = -len(body) % 4
        first = 0x80 | FMT_TRANSPORT_CC
        if padding:  # RFC 3550 padding: the P bit, and the last byte counts the padding bytes
            first |= 0x20
            body += b"\x00" * (padding - 1) + bytes((padding,))
        return _HEADER.pack(first, RTCP_RTPFB, len(body) // 4) + body

    @classmethod
    def parse(cls, data: bytes) -> TransportFeedback:
        """Parse a single feedback packet (the first of `data`)."""
        if len(data) < 4:
            raise ValueError("RTCP packet too short")
        first, packet_type, words = _HEADER.unpack_from(data)
        if first >> 6 != 2:
            raise ValueError(f"unsupported RTCP version {first >> 6}")
        if packet_type != RTCP_RTPFB or first & 0x1F != FMT_TRANSPORT_CC:
            raise ValueError(f"not an RTCP transport feedback packet (type {packet_type}, FMT {first & 0x1F})")
        end = 4 * (words + 1)
        if end > len(data):
            raise ValueError("RTCP length field exceeds data")
        if first & 0x20:
            padding = data[end - 1]
            if padding == 0 or padding > end - 4:
                raise ValueError("RTCP padding exceeds packet")
            end -= padding
        return cls._decode(FMT_TRANSPORT_CC, data, 4, end)

    @classmethod
    def _decode(cls, count: int, data: bytes, start: int, end: int) -> TransportFeedback:
        if start + _FIXED.size > end:
            raise ValueError("RTCP transport feedback too short")
        sender, media, base, status_count, word = _FIXED.unpack_from(data, start)
        if status_count == 0:
            raise ValueError("RTCP transport feedback reports no packets")
        if status_count > MAX_STATUS_COUNT:
            raise ValueError(f"RTCP transport feedback reports {status_count} packets (at most {MAX_STATUS_COUNT})")
        reference = word >> 8
        pos = start + _FIXED.size
        symbols: list[int] = []
        while len(symbols) < status_count:
            if pos + 2 > end:
                raise ValueError("RTCP transport feedback chunks exceed packet")
            symbols.extend(decode_chunk(_U16.unpack_from(data, pos)[0]))
            pos += 2
        del symbols[status_count:]
        arrivals: list[int | None] = []
        time = reference * TICKS_PER_REFERENCE
        for symbol in symbols:
            if symbol == NOT_RECEIVED:
                arrivals.append(None)
                continue
            if symbol == SMALL_DELTA:
                if pos + 1 > end:
                    raise ValueError("RTCP transport feedback deltas exceed packet")
                time += data[pos]
                pos += 1
            else:
                if pos + 2 > end:
                    raise ValueError("RTCP transport feedback deltas exceed packet")
                time += _I16.unpack_from(data, pos)[0]
                pos += 2
            arrivals.append(time)
        return cls(sender, media, base, reference, word & 0xFF, arrivals)


def decode_chunk(chunk: int) -> list[int]:
    """The status symbols one packet chunk stands for (a vector's trailing symbols may be padding)."""
    if not chunk & 0x8000:  # run-length chunk: T=0, 2-bit symbol, 13-bit run
        symbol = (chunk >> 13) & 0x3
        if symbol == 3:
            raise ValueError("RTCP transport feedback uses the reserved status symbol")
        return [symbol] * (chunk & RUN_LENGTH_MAX)
    if not chunk & 0x4000:  # status vector of 14 one-bit symbols
        return [(chunk >> shift) & 1 for shift in range(ONE_BIT_SYMBOLS - 1, -1, -1)]
    symbols = [(chunk >> shift) & 3 for shift in range(2 * TWO_BIT_SYMBOLS - 2, -1, -2)]
    if 3 in symbols:
        raise ValueError("RTCP transport feedback uses the reserved status symbol")
    return symbols


def encode_chunks(symbols: list[int]) -> list[int]:
    """Packet chunks for a list of status symbols, greedily: a run of 14 or more equal symbols (7 when a vector
    would need two bits) becomes a run-length chunk; otherwise the next 14 symbols become a one-bit vector when
    none needs a large delta, else the next 7 a two-bit vector. The last 7 or fewer symbols, when not all equal,
    become a two-bit vector (as libwebrtc encodes them, so feedback for the same arrivals is byte for byte the
    same as Chromium's). A last vector is padded with 'not received'."""
    chunks: list[int] = []
    index = 0
    count = len(symbols)
    while index < count:
        symbol = symbols[index]
        run = 1
        while index + run < count and symbols[index + run] == symbol and run < RUN_LENGTH_MAX:
            run += 1
        window = symbols[index : index + ONE_BIT_SYMBOLS]
        one_bit = LARGE_DELTA not in window
        if run >= ONE_BIT_SYMBOLS or (not one_bit and run >= TWO_BIT_SYMBOLS) or index + run == count:
            chunks.append((symbol << 13) | run)
            index += run
        elif one_bit and count - index > TWO_BIT_SYMBOLS:
            chunk = 0x8000
            for position, value in enumerate(window):
                chunk |= value << (ONE_BIT_SYMBOLS - 1 - position)
            chunks.append(chunk)
            index += ONE_BIT_SYMBOLS
        else:
            chunk = 0xC000
            for position, value in enumerate(symbols[index : index + TWO_BIT_SYMBOLS]):
                chunk |= value << (2 * (TWO_BIT_SYMBOLS - 1 - position))
            chunks.append(chunk)
            index += TWO_BIT_SYMBOLS
    return chunks
