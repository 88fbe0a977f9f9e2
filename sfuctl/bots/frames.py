"""Frame accounting of one received stream from RTP headers alone: loss before recovery, complete frames, freezes.

A frame ends at a packet with the marker bit (for audio every packet is a frame). It is complete once every
sequence number from the previous frame's end to its own end has arrived, first transmissions and
retransmissions alike. Sequence numbers missing when a later one arrived are "lost before recovery"; one still
missing after `max_age` seconds is given up, and so is its frame.

A freeze follows webrtc-stats' freezeCount (as Chromium measures it): the wall-clock delay between two complete
frames (our stand-in for rendered frames) is a freeze when it is at least max(3 x mean, mean + 150 ms), the mean
taken over the last 30 delays including this one, once 5 are known; its whole delay counts as frozen time. A
freeze still open (no frame yet) counts up to the time asked for, in freeze_totals(), so a window or a run that
ends inside it sees it.
"""

from __future__ import annotations

from collections import deque

from sfuctl.rtc.rtp import seq_distance

FREEZE_WINDOW = 30  # inter-frame delays in the mean (webrtc-stats: the last 30 rendered frames)
FREEZE_MIN_DELAYS = 5  # no freeze is judged before this many delays are known (as Chromium)
FREEZE_MIN_INCREASE = 0.150  # s: a freeze is also at least this much longer than the mean delay
MAX_GAP = 512  # a jump further ahead is a stream restart, not loss
FREEZE_LOG = 64  # the last freezes kept with their times (a report says when the stream froze, not only how often)


class FrameTracker:
    """Per-packet work is a few integer operations while nothing is missing."""

    __slots__ = (
        "clock_rate", "detect_freezes", "max_age", "packets", "duplicates", "lost_first", "recovered", "given_up",
        "frames", "complete_frames", "lost_frames", "freezes", "freeze_seconds", "freeze_log",
        "_highest", "_missing", "_pending", "_last_complete_at", "_delays", "_delay_sum",
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
        self.freezes = 0  # closed freezes; freeze_totals() adds one still open
        self.freeze_seconds = 0.0
        self.freeze_log: deque[tuple[float, float]] = deque(maxlen=FREEZE_LOG)  # (frozen since, seconds)
        self._highest: int | None = None
        self._missing: dict[int, float] = {}  # sequence -> when noticed, oldest first
        self._pending: deque[int] = deque()  # end sequences of frames waiting for packets, in sequence order
        self._last_complete_at: float | None = None
        self._delays: deque[float] = deque(maxlen=FREEZE_WINDOW)  # wall-clock delays between complete frames
        self._delay_sum = 0.0

    @property
    def missing(self) -> int:
        return len(self._missing)

    @property
    def last_complete_at(self) -> float | None:
        """When the last complete frame was (None before the first)."""
        return self._last_complete_at

    def freeze_totals(self, now: float) -> tuple[int, float]:
        """(freezes, frozen seconds) as of `now`, counting a freeze still open since the last complete frame
        up to `now`: the totals only grow, and a freeze that closes later keeps being counted once."""
        last_at = self._last_complete_at
        if self.detect_freezes and last_at is not None and self._is_freeze(now - last_at):
            return self.freezes + 1, self.freeze_seconds + (now - last_at)
        return self.freezes, self.freeze_seconds

    def _is_freeze(self, delay: float) -> bool:
        """Whether an inter-frame `delay` is a freeze, judged with the mean of the window that includes it."""
        delays = self._delays
        if len(delays) == FREEZE_WINDOW:
            count, total = FREEZE_WINDOW, self._delay_sum - delays[0] + delay
        else:
            count, total = len(delays) + 1, self._delay_sum + delay
        if count < FREEZE_MIN_DELAYS:
            return False
        mean = total / count
        return delay >= max(3 * mean, mean + FREEZE_MIN_INCREASE)

    def on_packet(self, sequence: int, marker: bool, now: float) -> bool:
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
            self._frame_end(sequence, now)
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
            while pending and seq_distance(pending[0], sequence) < 0:
                pending.popleft()
                self._complete(now)
            if pending:
                lost_end = pending.popleft()
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

    def _frame_end(self, sequence: int, now: float) -> None:
        missing = self._missing
        if not missing or seq_distance(sequence, next(iter(missing))) < 0:
            self._complete(now)
            if self._pending:
                self._release(now)
            return
        pending = self._pending
        if not pending or seq_distance(sequence, pending[-1]) > 0:
            pending.append(sequence)
        else:  # a retransmitted end of an older frame: keep the queue in sequence order
            items = sorted([*pending, sequence], key=lambda item: seq_distance(item, sequence))
            pending.clear()
            pending.extend(items)

    def _release(self, now: float) -> None:
        """Complete the waiting frames that no longer miss a packet."""
        pending = self._pending
        oldest = next(iter(self._missing), None)
        while pending and (oldest is None or seq_distance(pending[0], oldest) < 0):
            pending.popleft()
            self._complete(now)

    def _complete(self, now: float) -> None:
        self.complete_frames += 1
        last_at = self._last_complete_at
        if last_at is not None and self.detect_freezes:
            delay = now - last_at
            if self._is_freeze(delay):
                self.freezes += 1
                self.freeze_seconds += delay
                self.freeze_log.append((last_at, delay))
            delays = self._delays
            if len(delays) == FREEZE_WINDOW:
                self._delay_sum -= delays[0]
            delays.append(delay)
            self._delay_sum += delay
        self._last_complete_at = now
