"""Meter: packet and byte counters with a bitrate sampled once per interval."""

from __future__ import annotations


class Meter:
    """Counts per packet (two additions); bitrate is derived once per `sample` call, never per packet."""

    __slots__ = ("packets", "bytes", "bitrate_bps", "packet_rate", "_last_bytes", "_last_packets", "_last_time")

    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0
        self.bitrate_bps = 0.0
        self.packet_rate = 0.0
        self._last_bytes = 0
        self._last_packets = 0
        self._last_time: float | None = None

    def add(self, size: int) -> None:
        self.packets += 1
        self.bytes += size

    def sample(self, now: float) -> None:
        """Update bitrate and packet rate over the time since the previous sample."""
        if self._last_time is not None and now > self._last_time:
            elapsed = now - self._last_time
            self.bitrate_bps = (self.bytes - self._last_bytes) * 8 / elapsed
            self.packet_rate = (self.packets - self._last_packets) / elapsed
        self._last_time = now
        self._last_bytes = self.bytes
        self._last_packets = self.packets
