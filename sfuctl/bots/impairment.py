"""Network impairment of one direction of a bot's UDP socket: loss, delay, jitter and a bandwidth limit.

Approximate by design (a load tester's knobs, not a network emulator): each datagram is dropped with
probability `loss`; survivors leave through a token bucket (`bandwidth_kbps`, a 20 ms / 3000-byte burst and
at most 500 ms of queue, beyond which they are dropped), then wait `delay_ms / 2` plus a uniform random
0..`jitter_ms`. Datagrams stay in order. Applied to both directions, `delay_ms` is the added round-trip time.
The settings may change at given times (an ImpairmentStep timeline), e.g. 10% loss from t=20 s to t=40 s.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Address = tuple[Any, ...]

BURST_SECONDS = 0.02
MIN_BURST_BYTES = 3000
MAX_QUEUE_SECONDS = 0.5
# Due datagrams are delivered together when their times are this close (the loop's timers have ~1 ms grain).
DELIVERY_SLACK = 0.0005


@dataclass(frozen=True)
class ImpairmentConfig:
    """Per-bot impairment; each direction gets its own half of the delay and its own random draws."""

    loss: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    bandwidth_kbps: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError(f"loss must be between 0 and 1, not {self.loss}")
        if not 0.0 <= self.delay_ms <= 10_000:
            raise ValueError(f"delay must be between 0 and 10000 ms, not {self.delay_ms}")
        if not 0.0 <= self.jitter_ms <= 10_000:
            raise ValueError(f"jitter must be between 0 and 10000 ms, not {self.jitter_ms}")
        if self.bandwidth_kbps is not None and not 8 <= self.bandwidth_kbps <= 10_000_000:
            raise ValueError(f"bandwidth must be between 8 and 10000000 kbps, not {self.bandwidth_kbps}")

    @property
    def active(self) -> bool:
        return bool(self.loss or self.delay_ms or self.jitter_ms or self.bandwidth_kbps)


@dataclass(frozen=True)
class ImpairmentStep:
    """From `at` seconds after the start of a run on, `impairment` applies (until the next step)."""

    at: float
    impairment: ImpairmentConfig

    @classmethod
    def from_dict(cls, data: dict) -> ImpairmentStep:
        return cls(at=data["at"], impairment=ImpairmentConfig(**data["impairment"]))


class LinkModel:
    """The decisions of one direction, without I/O: admit(size, now) -> delivery time, or None when dropped.

    Loss and jitter draw from two generators seeded from `seed`, so the loss pattern of a given seed does
    not change with the other settings. `changes` are (time, config) pairs on the clock of `now`, in time
    order: from each time on, its config applies.
    """

    def __init__(
        self, config: ImpairmentConfig, seed: str, changes: tuple[tuple[float, ImpairmentConfig], ...] = ()
    ) -> None:
        self.datagrams = 0
        self.dropped = 0
        self.queue_dropped = 0
        self._loss_rng = random.Random(f"{seed}:loss")
        self._jitter_rng = random.Random(f"{seed}:jitter")
        self._tat = float("-inf")  # GCRA theoretical arrival time
        self._last_delivery = float("-inf")
        self._changes = sorted(changes, key=lambda change: change[0])
        self._next_change = self._changes[0][0] if self._changes else float("inf")
        self._apply(config)

    def _apply(self, config: ImpairmentConfig) -> None:
        self.config = config
        self._loss = config.loss
        self._one_way = config.delay_ms / 2000.0
        self._jitter = config.jitter_ms / 1000.0
        self._rate = config.bandwidth_kbps * 125.0 if config.bandwidth_kbps else 0.0  # bytes per second
        self._tolerance = max(MIN_BURST_BYTES, self._rate * BURST_SECONDS) / self._rate if self._rate else 0.0

    def _advance(self, now: float) -> None:
        """Apply every change due at `now`."""
        changes = self._changes
        while changes and changes[0][0] <= now:
            self._apply(changes.pop(0)[1])
        self._next_change = changes[0][0] if changes else float("inf")

    def admit(self, size: int, now: float) -> float | None:
        """When a datagram of `size` bytes sent at `now` arrives, or None if it is lost."""
        if now >= self._next_change:
            self._advance(now)
        self.datagrams += 1
        if self._loss and self._loss_rng.random() < self._loss:
            self.dropped += 1
            return None
        departure = now
        if self._rate:
            tat = self._tat if self._tat > now else now
            departure = max(now, tat - self._tolerance)
            if departure - now > MAX_QUEUE_SECONDS:
                self.queue_dropped += 1
                return None
            self._tat = tat + size / self._rate
        delivery = departure + self._one_way
        if self._jitter:
            delivery += self._jitter_rng.uniform(0.0, self._jitter)
        if delivery < self._last_delivery:
            delivery = self._last_delivery
        self._last_delivery = delivery
        return delivery


def is_rtp(data: bytes) -> bool:
    """RFC 7983 + RFC 5761: an (S)RTP datagram that is not RTCP."""
    return len(data) > 1 and 127 < data[0] < 192 and not 191 < data[1] < 224


class Link:
    """One impaired direction on the event loop: a FIFO of admitted datagrams and one timer for its head."""

    def __init__(
        self,
        model: LinkModel,
        deliver: Callable[[bytes, Address], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.model = model
        self.rtp_dropped = 0
        self._deliver = deliver
        self._loop = loop
        self._queue: deque[tuple[float, bytes, Address]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def push(self, data: bytes, addr: Address) -> None:
        now = self._loop.time()
        at = self.model.admit(len(data), now)
        if at is None:
            if is_rtp(data):
                self.rtp_dropped += 1
            return
        if at <= now and not self._queue:
            self._deliver(data, addr)
            return
        self._queue.append((at, data, addr))
        if self._timer is None:
            self._timer = self._loop.call_at(at, self._flush)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()

    def _flush(self) -> None:
        self._timer = None
        queue = self._queue
        horizon = self._loop.time() + DELIVERY_SLACK
        while queue and queue[0][0] <= horizon:
            _, data, addr = queue.popleft()
            self._deliver(data, addr)
        if queue:
            self._timer = self._loop.call_at(queue[0][0], self._flush)
