"""StatsFeed: the stats streams of one process (a worker or the front), bounded in number, sharing snapshots.

A stream pushes a `stats` notification every interval. However many streams are due at about the same time,
one snapshot is built (or gathered from the workers) and its text is sent to all of them: the cost of stats is per
interval, not per client.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

from .auth import hide_addresses
from .quotas import Quotas, check

Build = Callable[[str | None], Awaitable[dict]]


class StatsFeed:
    """Counts open streams against the quota and shares each snapshot for half the shortest interval."""

    def __init__(self, build: Build, quotas: Quotas) -> None:
        self.build = build
        self.quotas = quotas
        self.streams = 0
        self.snapshots_built = 0
        self._latest: dict[tuple[str | None, bool], tuple[float, asyncio.Future[str]]] = {}

    def open(self) -> None:
        """Count a new stream; QuotaExceeded when there are already as many as the quota allows."""
        check("stats_subscriptions", self.quotas.stats_subscriptions, self.streams + 1, "too many stats streams are open")
        self.streams += 1

    def close(self) -> None:
        self.streams -= 1

    def check_interval(self, interval: object, high: float) -> float:
        """A stream's interval in seconds; ValueError unless a number from the quota's minimum to `high`."""
        low = self.quotas.stats_min_interval
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not low <= interval <= high:
            raise ValueError(f"'interval' must be a number of seconds from {low} to {high}")
        return float(interval)

    async def notification(self, room: str | None, sees_addresses: bool) -> str:
        """The text of a `stats` notification for `room` (None: every room), shared while it is fresh; remote
        addresses hidden unless the reader `sees_addresses` (auth.hide_addresses)."""
        key = (room, sees_addresses)
        now = time.monotonic()
        latest = self._latest.get(key)
        if latest is not None and now - latest[0] < self.quotas.stats_min_interval / 2:
            return await asyncio.shield(latest[1])
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._latest[key] = (now, future)
        if len(self._latest) > self.quotas.stats_subscriptions:  # one per view in use, bounded
            self._latest = {key: self._latest[key]}
        try:
            snapshot = await self.build(room)
            if not sees_addresses:
                hide_addresses(snapshot)
            future.set_result(json.dumps({"method": "stats", "params": snapshot}))
            self.snapshots_built += 1
        except BaseException as exc:
            if self._latest.get(key, (0, None))[1] is future:
                del self._latest[key]
            if isinstance(exc, Exception):
                future.set_exception(exc)
                future.exception()  # retrieved here: the streams that share it see it through their await
            else:
                future.cancel()
            raise
        return future.result()
