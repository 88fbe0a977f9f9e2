"""Admission: a saturated worker refuses new peers (`overloaded`), so that the peers it has keep their media.

A worker is saturated when the 95th percentile of its event-loop lag over the last LAG_WINDOW seconds exceeds
`--max-loop-lag-ms` (its timers, consent checks and RTCP run late: every call on it degrades), or when it
forwards to as many consumers as `--max-consumers-per-worker` allows.
"""

from __future__ import annotations

from collections import deque

from .errors import SignalingError

# Loop lag is judged as the 95th percentile over this many seconds: long enough to ignore one slow garbage
# collection, short enough to stop admitting within a few joins.
LAG_WINDOW = 2.0


class LoopLag:
    """Samples of event-loop lag (seconds) over the last LAG_WINDOW; time is a parameter."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, now: float, lag: float) -> None:
        samples = self._samples
        samples.append((now, lag))
        while samples and samples[0][0] < now - LAG_WINDOW:
            samples.popleft()

    def p95(self) -> float:
        """The 95th percentile of the window's samples, 0 without any."""
        if not self._samples:
            return 0.0
        lags = sorted(lag for _, lag in self._samples)
        return lags[min(len(lags) - 1, int(0.95 * len(lags)))]


def overloaded(why: str) -> SignalingError:
    return SignalingError("overloaded", f"this server is saturated ({why}): try again later, or another server")
