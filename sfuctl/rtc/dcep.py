"""The Data Channel Establishment Protocol (RFC 8832): DATA_CHANNEL_OPEN and DATA_CHANNEL_ACK messages,
and the SCTP payload protocol identifiers (PPIDs) of WebRTC data channels (RFC 8831 section 8)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

PPID_DCEP = 50
PPID_STRING = 51
PPID_BINARY = 53
# An empty message travels as one zero byte under these PPIDs (RFC 8831 section 6.6).
PPID_STRING_EMPTY = 56
PPID_BINARY_EMPTY = 57
MESSAGE_PPIDS = frozenset({PPID_STRING, PPID_BINARY, PPID_STRING_EMPTY, PPID_BINARY_EMPTY})

MESSAGE_OPEN = 0x03
MESSAGE_ACK = 0x02
ACK = bytes([MESSAGE_ACK])

# Channel type: the high bit says unordered, the low bits the reliability rule (RFC 8832 section 5.1).
UNORDERED = 0x80
RELIABLE = 0x00
PARTIAL_RELIABLE_REXMIT = 0x01
PARTIAL_RELIABLE_TIMED = 0x02
_OPEN_HEADER = struct.Struct("!BBHIHH")


@dataclass(frozen=True)
class ChannelParameters:
    """What a DATA_CHANNEL_OPEN announces: at most one of max_retransmits / max_packet_lifetime (ms)."""

    label: str = ""
    protocol: str = ""
    ordered: bool = True
    max_retransmits: int | None = None
    max_packet_lifetime: int | None = None
    priority: int = 0

    def __post_init__(self) -> None:
        if self.max_retransmits is not None and self.max_packet_lifetime is not None:
            raise ValueError("a channel limits retransmits or lifetime, not both")
        for name in ("max_retransmits", "max_packet_lifetime"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 0xFFFFFFFF:
                raise ValueError(f"{name} {value} outside 0..2^32-1")
        if not 0 <= self.priority <= 0xFFFF:
            raise ValueError(f"priority {self.priority} outside 0..65535")

    @classmethod
    def parse(cls, data: bytes) -> ChannelParameters:
        """Read a DATA_CHANNEL_OPEN message; ValueError says what is wrong."""
        if len(data) < _OPEN_HEADER.size:
            raise ValueError(f"DATA_CHANNEL_OPEN of {len(data)} bytes is shorter than its 12-byte header")
        message_type, channel_type, priority, reliability, label_length, protocol_length = _OPEN_HEADER.unpack_from(data)
        if message_type != MESSAGE_OPEN:
            raise ValueError(f"message type {message_type:#04x} is not DATA_CHANNEL_OPEN (0x03)")
        if len(data) != _OPEN_HEADER.size + label_length + protocol_length:
            raise ValueError(
                f"DATA_CHANNEL_OPEN of {len(data)} bytes does not hold its label ({label_length}) and protocol ({protocol_length})"
            )
        rule = channel_type & 0x7F
        if rule not in (RELIABLE, PARTIAL_RELIABLE_REXMIT, PARTIAL_RELIABLE_TIMED):
            raise ValueError(f"unknown channel type {channel_type:#04x}")
        end = _OPEN_HEADER.size + label_length
        try:
            label = data[_OPEN_HEADER.size : end].decode()
            protocol = data[end:].decode()
        except UnicodeDecodeError:
            raise ValueError("DATA_CHANNEL_OPEN label or protocol is not UTF-8") from None
        return cls(
            label=label,
            protocol=protocol,
            ordered=not channel_type & UNORDERED,
            max_retransmits=reliability if rule == PARTIAL_RELIABLE_REXMIT else None,
            max_packet_lifetime=reliability if rule == PARTIAL_RELIABLE_TIMED else None,
            priority=priority,
        )

    def __bytes__(self) -> bytes:
        """The DATA_CHANNEL_OPEN message announcing this channel."""
        label, protocol = self.label.encode(), self.protocol.encode()
        channel_type, reliability = RELIABLE, 0
        if self.max_retransmits is not None:
            channel_type, reliability = PARTIAL_RELIABLE_REXMIT, self.max_retransmits
        elif self.max_packet_lifetime is not None:
            channel_type, reliability = PARTIAL_RELIABLE_TIMED, self.max_packet_lifetime
        if not self.ordered:
            channel_type |= UNORDERED
        header = _OPEN_HEADER.pack(MESSAGE_OPEN, channel_type, self.priority, reliability, len(label), len(protocol))
        return header + label + protocol

    def info(self) -> dict:
        """The JSON form used in signaling and stats."""
        return {
            "label": self.label,
            "protocol": self.protocol,
            "ordered": self.ordered,
            "maxRetransmits": self.max_retransmits,
            "maxPacketLifeTime": self.max_packet_lifetime,
        }


def encode_message(data: str | bytes) -> tuple[int, bytes]:
    """(PPID, payload) of a data channel message, with the empty-message PPIDs for "" and b""."""
    if isinstance(data, str):
        return (PPID_STRING, data.encode()) if data else (PPID_STRING_EMPTY, b"\x00")
    return (PPID_BINARY, bytes(data)) if data else (PPID_BINARY_EMPTY, b"\x00")


def decode_message(ppid: int, payload: bytes) -> str | bytes:
    """The message a PPID and payload carry (the inverse of encode_message); ValueError for other PPIDs."""
    if ppid == PPID_STRING:
        return payload.decode()
    if ppid == PPID_BINARY:
        return payload
    if ppid == PPID_STRING_EMPTY:
        return ""
    if ppid == PPID_BINARY_EMPTY:
        return b""
    raise ValueError(f"PPID {ppid} is not a data channel message")
