"""MachineCpu: how busy all the cores of this machine were since the last look (Linux /proc/stat)."""

from __future__ import annotations

from pathlib import Path

PROC_STAT = Path("/proc/stat")
BUSY_WARNING = 85.0  # % of all cores: above this a load generator reports false loss and jitter


class MachineCpu:
    """percent(): the share of all cores' time not idle since the previous call; None where unknown."""

    def __init__(self) -> None:
        self._last = _read()

    def percent(self) -> float | None:
        now = _read()
        last, self._last = self._last, now
        if now is None or last is None or now[1] <= last[1]:
            return None
        idle, total = now[0] - last[0], now[1] - last[1]
        return round(100.0 * (1 - idle / total), 1)


def _read() -> tuple[int, int] | None:
    """(idle, total) jiffies of all cores: idle counts idle and iowait."""
    try:
        first = PROC_STAT.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    values = [int(v) for v in first[1:]]
    return values[3] + values[4], sum(values[:8])  # user nice system idle iowait irq softirq steal
