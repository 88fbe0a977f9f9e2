"""Quotas: what one client may make the server hold or do, the token bucket that paces requests, refusal counts.

Every limit has a default that lets the benchmarks and scenarios run unchanged and a `sfuctl serve` flag. A
request over a quota gets a structured error (`quota_exceeded`, `rate_limited`, ...) and changes nothing else;
each refusal is counted by reason for /metrics.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, fields

from .errors import SignalingError


@dataclass(frozen=True)
class Quotas:
    """Per-server, per-room, per-peer and per-connection limits (docs/limits.md)."""

    rooms: int = 1000
    peers_per_room: int = 1000
    producers_per_peer: int = 32
    consumers_per_peer: int = 256
    messages_per_second: float = 50.0  # signaling requests per connection, sustained
    message_burst: int = 200  # ... and in a burst
    json_depth: int = 32  # nesting of a signaling message, checked before it is parsed
    stats_subscriptions: int = 64  # stats streams open at once on a worker
    stats_min_interval: float = 0.1  # seconds between two pushes of one stats stream
    send_queue_bytes: int = 16 * 1024 * 1024  # frames waiting for a client that does not read; over it, it is closed

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def flag(quota: str) -> str:
    """The `sfuctl serve` option that sets `quota`."""
    return "--max-" + quota.replace("_", "-")


class QuotaExceeded(SignalingError):
    """A request that would take a client over a quota; the message names the quota's flag."""

    def __init__(self, quota: str, limit: object, what: str) -> None:
        super().__init__("quota_exceeded", f"{what}: the limit is {limit} (sfuctl serve {flag(quota)})")
        self.quota = quota


def check(quota: str, limit: int, count: int, what: str) -> None:
    """Raise QuotaExceeded when `count` items exceed `limit`."""
    if count > limit:
        raise QuotaExceeded(quota, limit, what)


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; time is a parameter (deterministic tests)."""

    __slots__ = ("rate", "burst", "tokens", "updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.updated = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend `cost` tokens if there are enough; False (and nothing spent) otherwise."""
        elapsed = now - self.updated
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.updated = now
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True


# Error codes that are refusals of work (as opposed to mistakes in a request), counted by /metrics.
REFUSAL_CODES = frozenset({"too_large", "too_deep", "rate_limited", "quota_exceeded", "overloaded", "slow_reader"})


class Refusals:
    """Refusals by reason (a quota's name, or the error code for the others), for /metrics."""

    def __init__(self) -> None:
        self.by_reason: Counter[str] = Counter()

    def add(self, error: SignalingError) -> None:
        """Count `error` if it is a refusal."""
        if isinstance(error, QuotaExceeded):
            self.by_reason[error.quota] += 1
        elif error.code in REFUSAL_CODES:
            self.by_reason[error.code] += 1
