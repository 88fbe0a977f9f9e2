"""Quotas: what one client may make the server hold or do, and refusals counted by reason.

Every limit has a default that lets the benchmarks and scenarios run unchanged and a `sfuctl serve` flag. A
request over a quota gets a structured error (`quota_exceeded`, `rate_limited`, ...) and changes nothing else;
each refusal is counted by reason for /metrics.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import SignalingError


def _quota(default: float, flag: str, help: str, minimum: float | None = None, served: float | None = None) -> Any:
    """A quota field: its flag, help, least value (default: 1 for counts, 0.001 for rates and seconds) and the
    value `sfuctl serve` runs with when it differs from the default."""
    if minimum is None:
        minimum = 1 if isinstance(default, int) else 0.001
    metadata = {"flag": flag, "help": help, "min": minimum, "served": default if served is None else served}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Quotas:
    """Per-server, per-room, per-peer and per-connection limits (docs/limits.md); metadata: flag and help."""

    rooms: int = _quota(1000, "--max-rooms", "Rooms open at once on a worker.")
    peers_per_room: int = _quota(1000, "--max-peers-per-room", "Peers in one room.")
    producers_per_peer: int = _quota(32, "--max-producers-per-peer", "Tracks one peer (or one WHIP POST) publishes.")
    consumers_per_peer: int = _quota(256, "--max-consumers-per-peer", "Tracks one peer receives.")
    # An offer without BUNDLE asks for an ICE/DTLS/SRTP transport (a handshake, timers, keys) per m-line; a bundled
    # client uses two.
    transports_per_peer: int = _quota(
        8, "--max-transports-per-peer", "ICE/DTLS transports of one peer, both directions (an offer without BUNDLE takes one per m-line)."
    )
    # 2.5 ticks (20 ms) late: media and feedback already wait longer than a NACK round trip on a LAN. Off (0) for a
    # server embedded in another program (tests, scripts), whose loop lag is that program's too; `sfuctl serve` runs
    # it at 50 ms.
    loop_lag_ms: float = _quota(
        0.0, "--max-loop-lag-ms", "Event-loop lag (p95 over 2 s) over which new peers get 'overloaded'; 0: never.", 0, 50.0
    )
    consumers_per_worker: int = _quota(
        20000, "--max-consumers-per-worker", "Consumers one worker forwards to; over it, new peers get 'overloaded'."
    )
    messages_per_second: float = _quota(50.0, "--max-messages-per-second", "Signaling requests per connection per second, sustained.")
    message_burst: int = _quota(200, "--max-message-burst", "Signaling requests per connection in a burst.")
    json_depth: int = _quota(32, "--max-json-depth", "Nesting of a signaling message, refused before it is parsed.")
    stats_subscriptions: int = _quota(64, "--max-stats-subscriptions", "Stats streams open at once.")
    stats_min_interval: float = _quota(0.1, "--min-stats-interval", "Shortest interval of a stats stream, in seconds.")
    send_queue_bytes: int = _quota(
        16 * 1024 * 1024, "--max-send-queue-bytes", "Bytes queued for a client that does not read before it is disconnected."
    )


def flag(quota: str) -> str:
    """The `sfuctl serve` option that sets `quota`."""
    return next(f.metadata["flag"] for f in fields(Quotas) if f.name == quota)


class QuotaExceeded(SignalingError):
    """A request that would take a client over a quota; the message names the quota's flag."""

    def __init__(self, quota: str, limit: object, what: str) -> None:
        super().__init__("quota_exceeded", f"{what}: the limit is {limit} (sfuctl serve {flag(quota)})")
        self.quota = quota


def check(quota: str, limit: int, count: int, what: str) -> None:
    """Raise QuotaExceeded when `count` items exceed `limit`."""
    if count > limit:
        raise QuotaExceeded(quota, limit, what)


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
