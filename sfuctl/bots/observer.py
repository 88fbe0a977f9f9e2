"""RunObserver: what a run of bots tells whoever watches it, the same whether the bots run in this process, in
bot processes (run_bots) or on load agents (the agents' Controller): a command's progress bar, a scenario's
recorder and live view, a load agent relaying to its controller. Observer is the one that does nothing:
subclass it and override only what you need; Collector keeps everything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .group import JoinEvent
    from .stats import Sample, StreamSample

log = logging.getLogger(__name__)


class RunObserver(Protocol):
    """The events of a run, in the order they come: started once, then joined per bot and sample / streams
    per interval; warning at any time. Called on the run's event loop: return quickly."""

    # Per-stream rows cost every bot work each interval: they are collected only for an observer that wants them.
    wants_streams: bool

    def started(self, t0: float) -> None:
        """The plans' start offsets count from t0 (time.monotonic())."""

    def joined(self, event: JoinEvent) -> None:
        """A bot finished joining, or failed to (event.error)."""

    def sample(self, t: float, sample: Sample) -> None:
        """The aggregate of an interval (every bot process or agent merged), taken t seconds after t0."""

    def streams(self, sample: StreamSample) -> None:
        """The per-stream rows of an interval, one StreamSample per bot process; only when wants_streams."""

    def warning(self, message: str) -> None:
        """A line for the user about something that does not stop the run (a busy or vanished agent)."""


def notify(call: Callable[[], None], what: str) -> None:
    """Tell a run's observer one thing; an observer that raises is logged and stops neither the run's sampling nor
    a bot nor the reading of a bot process."""
    try:
        call()
    except Exception:
        log.exception("the run's observer failed on %s", what)


class Observer:
    """A RunObserver that ignores everything."""

    wants_streams = False

    def started(self, t0: float) -> None:
        return None

    def joined(self, event: JoinEvent) -> None:
        return None

    def sample(self, t: float, sample: Sample) -> None:
        return None

    def streams(self, sample: StreamSample) -> None:
        return None

    def warning(self, message: str) -> None:
        return None


class Collector(Observer):
    """Keeps what a run tells, for scripts and tests: the start time, every join and sample, and (with
    `wants_streams`) every StreamSample with the time.monotonic() at which it came."""

    def __init__(self, wants_streams: bool = False) -> None:
        self.wants_streams = wants_streams
        self.starts: list[float] = []  # once a run
        self.joins: list[JoinEvent] = []
        self.samples: list[Sample] = []
        self.rows: list[tuple[float, StreamSample]] = []

    def started(self, t0: float) -> None:
        self.starts.append(t0)

    def joined(self, event: JoinEvent) -> None:
        self.joins.append(event)

    def sample(self, t: float, sample: Sample) -> None:
        self.samples.append(sample)

    def streams(self, sample: StreamSample) -> None:
        self.rows.append((time.monotonic(), sample))
