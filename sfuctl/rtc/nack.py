"""Receiver-side NACK generation and sender-side retransmission buffer (RFC 4585 generic NACK)."""

from __future__ import annotations

from collections.abc import Callable

from sfuctl.rtc.rtp import seq_distance


class NackGenerator:
    """Tracks sequence gaps of one stream and says which sequence numbers to NACK when.

    An entry is forgotten when its packet arrives, when it is older than max_age seconds, or once it
    has been NACKed max_retries times. At most max_missing entries are kept (oldest dropped first); a
    jump ahead by more than max_missing, or two sequential packets that far behind, is taken as a
    stream restart and resets the state. `on_gap`, if given, is called when a gap adds entries (so that an
    owner can look at `due` only while something is missing).
    """

    def __init__(
        self,
        max_age: float = 1.0,
        max_retries: int = 10,
        retry_interval: float = 0.05,
        max_missing: int = 512,
        on_gap: Callable[[], None] | None = None,
    ) -> None:
        self._max_age = max_age
        self._max_retries = max_retries
        self._retry_interval = retry_interval
        self._max_missing = max_missing
        self._on_gap = on_gap
        self._highest: int | None = None
        self._restart_seq: int | None = None
        # sequence -> [first noticed, last NACKed (None before the first), NACKs sent]; in sequence order
        self._missing: dict[int, list] = {}

    @property
    def missing(self) -> int:
        return len(self._missing)

    def on_packet(self, sequence: int, now: float) -> None:
        """Feed every received sequence number (including retransmissions)."""
        highest = self._highest
        if highest is None:
            self._highest = sequence
            return
        distance = seq_distance(sequence, highest)
        if distance > 0:
            if distance > 1:
                self._add_gap(highest, distance, now)
            self._highest = sequence
            return
        if distance == 0 or self._missing.pop(sequence, None) is not None:
            return
        if distance < -self._max_missing:
            if sequence == self._restart_seq:  # two sequential packets far behind: the stream restarted
                self._missing.clear()
                self._highest = sequence
                self._restart_seq = None
            else:
                self._restart_seq = (sequence + 1) & 0xFFFF

    def _add_gap(self, highest: int, distance: int, now: float) -> None:
        if distance - 1 > self._max_missing:  # a jump this far ahead is a restart, not loss
            self._missing.clear()
            return
        for offset in range(1, distance):
            self._missing[(highest + offset) & 0xFFFF] = [now, None, 0]
        for _ in range(len(self._missing) - self._max_missing):
            del self._missing[next(iter(self._missing))]
        if self._on_gap is not None:
            self._on_gap()

    def due(self, now: float) -> list[int]:
        """Sequence numbers to NACK now, oldest first; drops expired entries."""
        result: list[int] = []
        expired: list[int] = []
        for sequence, entry in self._missing.items():
            first_seen, last_sent, sent = entry
            if now - first_seen > self._max_age:
                expired.append(sequence)
            elif last_sent is None or now - last_sent >= self._retry_interval:
                if sent >= self._max_retries:
                    expired.append(sequence)
                else:
                    entry[1] = now
                    entry[2] = sent + 1
                    result.append(sequence)
        for sequence in expired:
            del self._missing[sequence]
        return result


class RetransmissionBuffer:
    """Ring of recently sent packets indexed by sequence & (size - 1)."""

    def __init__(self, size: int = 1024) -> None:
        if size < 1 or size & (size - 1):
            raise ValueError(f"retransmission buffer size {size} is not a power of two")
        self._mask = size - 1
        self._sequences: list[int] = [-1] * size
        self._packets: list[bytes | None] = [None] * size

    def store(self, sequence: int, packet: bytes) -> None:
        index = sequence & self._mask
        self._sequences[index] = sequence
        self._packets[index] = packet

    def get(self, sequence: int) -> bytes | None:
        """The stored packet, or None when its slot was never filled or now holds another sequence."""
        index = sequence & self._mask
        if self._sequences[index] != sequence:
            return None
        return self._packets[index]

    def clear(self) -> None:
        size = self._mask + 1
        self._sequences = [-1] * size
        self._packets = [None] * size
