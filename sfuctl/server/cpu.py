"""CPU use of a server process (a worker or the front), in percent of one core."""

from __future__ import annotations

import time


class CpuMeter:
    """CPU use of this process in percent of one core, over windows of at least `min_interval` seconds."""

    def __init__(self, now: float, cpu_seconds: float, min_interval: float = 1.0) -> None:
        self._min_interval = min_interval
        self._since = (now, cpu_seconds)
        self._percent: float | None = None

    def sample(self, now: float, cpu_seconds: float) -> float:
        """The last complete window's figure (the running one until a window completes)."""
        start, cpu_start = self._since
        elapsed = now - start
        if elapsed >= self._min_interval:
            self._percent = max(0.0, (cpu_seconds - cpu_start) * 100.0 / elapsed)
            self._since = (now, cpu_seconds)
        elif self._percent is None:
            return max(0.0, (cpu_seconds - cpu_start) * 100.0 / elapsed) if elapsed > 0 else 0.0
        return self._percent


_PROCESS_CPU = CpuMeter(time.monotonic(), time.process_time())


def process_cpu_percent() -> float:
    """CPU use of this (server) process, in percent of one core."""
    return _PROCESS_CPU.sample(time.monotonic(), time.process_time())


