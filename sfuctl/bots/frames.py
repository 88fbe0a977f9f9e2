"""Frame accounting of one received stream from RTP headers alone: loss before recovery, complete frames, freezes.

A frame ends at a packet with the marker bit (for audio every packet is a frame). It is complete once every
sequence number from the previous frame's end to its own end has arrived, first transmissions and
retransmissions alike. A freeze is a wait of more than `FREEZE_FRAMES` frame intervals between two complete
frames (the interval is learnt from RTP timestamps); its whole wait counts as frozen time. Sequence numbers
missing when a later one arrived are "lost before recovery"; one still missing after `max_age` seconds is
given up, and so is its frame.
"""

from __future__ import annotations

from collections import deque

from sfuctl.rtc.rtp import seq_distance

FREEZE_FRAMES = 3
MAX_GAP = 512  # a jump further ahead is a stream restart, not loss
INTERVAL_SMOOTHING = 1 / 16


class FrameTracker:
    """Per-packet work is a few integer operations while nothing is missing."""

    __slots__ = (
        "clock_rate", "detect_freezes", "max_age", "packets", "duplicates", "lost_first", "recovered", "given_up",
        "frames", "complete_frames", "lost_frames", "freezes", "freeze_seconds", "frame_interval",
        "_highest", "_missing", "_pending", "_last_complete_at", "_last_complete_ts",
    )

    def __init__(self, clock_rate: int, detect_freezes: bool = True, max_age: float = 1.5) -> None:
        self.clock_rate = clock_rate
        self.detect_freezes = detect_freezes
        self.max_age = max_age
        self.packets = 0  # distinct sequence numbers received
        self.duplicates = 0
        self.lost_first = 0
        self.recovered = 0
        self.given_up = 0
        self.frames = 0  # marker bits received (distinct packets)
        self.complete_frames = 0
        self.lost_frames = 0
        self.freezes = 0
        self.freeze_seconds = 0.0
        self.frame_interval: float | None = None
        self._highest: int | None = None
        self._missing: dict[int, float] = {}  # sequence -> when noticed, oldest first
        self._pending: deque[tuple[int, int]] = deque()  # (end sequence, timestamp) of frames waiting for packets
        self._last_complete_at: float | None = None
        self._last_complete_ts = 0

    @property
    def missing(self) -> int:
        return len(self._missing)

    def on_packet(self, sequence: int, timestamp: int, marker: bool, now: float) -> bool:
        """Account for one packet; False when it is a duplicate (already received)."""
        highest = self._highest
        recovered = False
        if highest is None:
            self._highest = sequence
        else:
            distance = (sequence - highest) & 0xFFFF
            if distance == 1:
                self._highest = sequence
            elif distance == 0:
                self.duplicates += 1
                return False
            elif distance < 0x8000:
                self._gap(highest, distance, now)
                self._highest = sequence
            elif self._missing.pop(sequence, None) is not None:
                self.recovered += 1
                recovered = True
            else:
                self.duplicates += 1
                return False
        self.packets += 1
        if marker:
            self.frames += 1
            self._frame_end(sequence, timestamp, now)
        elif recovered and self._pending:
            self._release(now)
        return True

    def expire(self, now: float) -> int:
        """Give up sequence numbers missing for longer than max_age, and their frames; returns how many."""
        missing = self._missing
        horizon = now - self.max_age
        expired = 0
        lost_end: int | None = None  # end of the frame just given up: its other missing packets go with it
        pending = self._pending
        while missing:
            sequence, noticed = next(iter(missing.items()))
            if noticed > horizon:
                break
            del missing[sequence]
            expired += 1
            if lost_end is not None and seq_distance(sequence, lost_end) <= 0:
                continue
            while pending and seq_distance(pending[0][0], sequence) < 0:
                self._complete(pending.popleft()[1], now)
            if pending:
                lost_end = pending.popleft()[0]
                self.lost_frames += 1
        if expired:
            self.given_up += expired
            self._release(now)
        return expired

    def _gap(self, highest: int, distance: int, now: float) -> None:
        lost = distance - 1
        if lost > MAX_GAP:
            self._missing.clear()
            self._pending.clear()
            return
        self.lost_first += lost
        missing = self._missing
        for offset in range(1, distance):
            missing[(highest + offset) & 0xFFFF] = now

    def _frame_end(self, sequence: int, timestamp: int, now: float) -> None:
        missing = self._missing
        if not missing or seq_distance(sequence, next(iter(missing))) < 0:
            self._complete(timestamp, now)
            if self._pending:
                self._release(now)
            return
        pending = self._pending
        if not pending or seq_distance(sequence, pending[-1][0]) > 0:
            pending.append((sequence, timestamp))
        else:  # a retransmitted end of an older frame: keep the queue in sequence order
            items = sorted([*pending, (sequence, timestamp)], key=lambda item: seq_distance(item[0], sequence))
            pending.clear()
            pending.extend(items)

    def _release(self, now: float) -> None:
        """Complete the waiting frames that no longer miss a packet."""
        pending = self._pending
        oldest = next(iter(self._missing), None)
        while pending and (oldest is None or seq_distance(pending[0][0], oldest) < 0):
            self._complete(pending.popleft()[1], now)

    def _complete(self, timestamp: int, now: float) -> None:
        self.complete_frames += 1
        last_at = self._last_complete_at
        if last_at is not None:
            step = (timestamp - self._last_complete_ts) & 0xFFFFFFFF
            interval = self.frame_interval
            if 0 < step < self.clock_rate:
                seconds = step / self.clock_rate
                self.frame_interval = interval = (
                    seconds if interval is None else interval + INTERVAL_SMOOTHING * (seconds - interval)
                )
            wait = now - last_at
            if self.detect_freezes and interval is not None and wait > FREEZE_FRAMES * interval:
                self.freezes += 1
                self.freeze_seconds += wait
        self._last_complete_at = now
        self._last_complete_ts = timestamp
