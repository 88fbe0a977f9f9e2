"""One real-time scheduler per process for every outgoing stream: a heap of next-frame times and one timer."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from typing import Protocol

log = logging.getLogger(__name__)

# Frames due within this much of now go out in the same wake-up (the loop's timers have ~1 ms grain).
SLACK = 0.001
# A stream this late (the process stalled) restarts its schedule from now instead of bursting to catch up.
MAX_LAG = 0.25


class Paced(Protocol):
    active: bool

    def send_frame(self, now: float) -> float:
        """Send the next frame (`now` is time.monotonic()); return the seconds until the one after it."""


class Pacer:
    """Calls each stream's send_frame at its frame times, which advance by the durations it returns."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, Paced]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self.late_restarts = 0

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, stream: Paced, at: float | None = None) -> None:
        """Start pacing `stream` from `at` (loop time, default now). Set stream.active = False to stop it."""
        due = self._loop.time() if at is None else at
        heapq.heappush(self._heap, (due, next(self._order), stream))
        if self._heap[0][2] is stream:
            self._arm()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._heap.clear()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(self._heap[0][0], self._run) if self._heap else None

    def _run(self) -> None:
        self._timer = None
        heap = self._heap
        now = self._loop.time()
        clock = time.monotonic()
        horizon = now + SLACK
        while heap and heap[0][0] <= horizon:
            due, order, stream = heapq.heappop(heap)
            if not stream.active:
                continue
            try:
                following = due + stream.send_frame(clock)
            except Exception:  # one broken stream must not stop the others
                log.exception("stream %r stopped", stream)
                stream.active = False
                continue
            if following < now - MAX_LAG:
                following = now
                self.late_restarts += 1
            heapq.heappush(heap, (following, order, stream))
        if heap:
            self._timer = self._loop.call_at(heap[0][0], self._run)
