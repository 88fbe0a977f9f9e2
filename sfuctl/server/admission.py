"""Admission: a saturated worker refuses new peers (`overloaded`), so that the peers it has keep their media.

A worker is saturated when the 95th percentile of its event-loop lag over the last LAG_WINDOW seconds exceeds
`--max-loop-lag-ms` while its own work keeps it busy (its thread ran or waited to run for BUSY_SHARE of the
window: its timers, consent checks and RTCP run late because of its calls, and every call on it degrades), or when it forwards to as many consumers as
`--max-consumers-per-worker` allows. Lag while the worker is mostly idle comes from other processes taking the
CPU; refusing peers would not help its calls then.
"""

from __future__ import annotations

import os
import time
from collections import deque

from .errors import SignalingError

# Loop lag is judged as the 95th percentile over this many seconds: long enough to ignore one slow garbage
# collection, short enough to stop admitting within a few joins.
LAG_WINDOW = 2.0
# The share of the window the worker's thread must have been running or runnable for its lag to be its own doing.
BUSY_SHARE = 0.9


def demand_seconds() -> float:
    """Seconds the calling thread has run or waited on a run queue (Linux schedstat); its CPU time elsewhere.
    Read with os.open/os.read (once per tick: a text file object costs ~5x the three system calls)."""
    try:
        fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        try:
            run, wait = os.read(fd, 128).split()[:2]
        finally:
            os.close(fd)
        return (int(run) + int(wait)) / 1e9
    except (OSError, ValueError):
        return time.thread_time()


class LoopLag:
    """Samples of event-loop lag and of demand_seconds() over the last LAG_WINDOW; time is a parameter."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, float, float]] = deque()  # (time, lag, demand seconds)

    def add(self, now: float, lag: float, cpu: float) -> None:
        samples = self._samples
        samples.append((now, lag, cpu))
        while samples and samples[0][0] < now - LAG_WINDOW:
            samples.popleft()

    def p95(self) -> float:
        """The 95th percentile of the window's lags (seconds), 0 without any."""
        if not self._samples:
            return 0.0
        lags = sorted(lag for _, lag, _ in self._samples)
        return lags[min(len(lags) - 1, int(0.95 * len(lags)))]

    def busy(self) -> bool:
        """Whether the thread ran or waited to run for at least BUSY_SHARE of the window."""
        if len(self._samples) < 2:
            return False
        (start, _, cpu_start), (end, _, cpu_end) = self._samples[0], self._samples[-1]
        return end > start and (cpu_end - cpu_start) / (end - start) >= BUSY_SHARE


def overloaded(why: str) -> SignalingError:
    return SignalingError("overloaded", f"this server is saturated ({why}): try again later, or another server")
