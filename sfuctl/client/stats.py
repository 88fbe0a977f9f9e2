"""Reading a server's stats: one snapshot, or a stream that rides out restarts (docs/stats.md)."""

from __future__ import annotations

import asyncio
from typing import Callable

from ..stats_schema import validate_snapshot
from ..tokens import scrub, url_with_token
from .signaling import SignalingClient, SignalingError

EXIT_BAD_SNAPSHOT = 1
EXIT_UNREACHABLE = 2
EXIT_REFUSED = 3
REFUSALS = ("unauthorized", "forbidden")
CONNECT_TIMEOUT = 5.0
RETRY_DELAYS = (0.5, 5.0)  # first and longest wait between reconnection attempts (doubling)


class StatsFailure(Exception):
    """Ends the command with a one-line message and an exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


async def fetch_snapshot(url: str, room: str | None = None, timeout: float = CONNECT_TIMEOUT, token: str | None = None) -> dict:
    """One snapshot via `getStats` (with an admin `token` on a server with auth); StatsFailure when the server
    is unreachable, refuses, or its answer is unreadable."""
    try:
        client = await SignalingClient.connect(url_with_token(url, token), timeout=timeout)
    except ConnectionError as exc:
        raise StatsFailure(scrub(str(exc)), EXIT_UNREACHABLE) from None
    try:
        snapshot = await client.request("getStats", timeout=timeout, **_room_param(room))
    except SignalingError as exc:
        if exc.code in REFUSALS:
            raise _refused(url, "getStats", exc) from None
        raise StatsFailure(f"getStats failed on {url}: {exc}", EXIT_UNREACHABLE) from None
    except asyncio.TimeoutError as exc:
        raise StatsFailure(f"getStats failed on {url}: {exc or 'timed out'}", EXIT_UNREACHABLE) from None
    finally:
        await client.close()
    return _checked(snapshot, url)


async def watch(
    url: str,
    interval: float,
    room: str | None,
    on_snapshot: Callable[[dict], None],
    on_disconnected: Callable[[str], None],
    token: str | None = None,
) -> None:
    """Subscribe to the server's stats stream and hand over each snapshot, forever.

    A lost or refused connection calls on_disconnected(reason) and retries with a doubling delay; a server
    that refuses the subscription or sends an unreadable snapshot raises StatsFailure.
    """
    delay = RETRY_DELAYS[0]
    while True:
        try:
            client = await SignalingClient.connect(url_with_token(url, token), timeout=CONNECT_TIMEOUT)
        except ConnectionError as exc:
            on_disconnected(scrub(str(exc)))
        else:
            try:
                await client.request("subscribeStats", interval=interval, **_room_param(room))
                delay = RETRY_DELAYS[0]
                while True:
                    on_snapshot(_checked(await _next_stats(client, max(5.0, 3 * interval)), url))
            except SignalingError as exc:
                if exc.code in REFUSALS:
                    raise _refused(url, "subscribeStats", exc) from None
                if exc.code != "closed":
                    raise StatsFailure(f"{url} refused subscribeStats: {exc}", EXIT_BAD_SNAPSHOT) from None
                on_disconnected("the server closed the connection")
            except (ConnectionError, asyncio.TimeoutError) as exc:
                on_disconnected(str(exc) or "timed out")
            finally:
                await client.close()
        await asyncio.sleep(delay)
        delay = min(delay * 2, RETRY_DELAYS[1])


async def _next_stats(client: SignalingClient, timeout: float) -> dict:
    """The next 'stats' notification; ConnectionError when the connection closes or stays silent."""
    while True:
        getter = asyncio.ensure_future(client.notifications.get())
        closed = asyncio.ensure_future(client.closed.wait())
        done, pending = await asyncio.wait({getter, closed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if getter in done:
            method, params = getter.result()
            if method == "stats":
                return params
            continue
        raise ConnectionError("the server closed the connection" if closed in done else f"no stats for {timeout:.0f} s")


def _checked(snapshot: dict, url: str) -> dict:
    try:
        validate_snapshot(snapshot)
    except ValueError as exc:
        raise StatsFailure(f"{url} sent a snapshot this sfuctl cannot read ({exc})", EXIT_BAD_SNAPSHOT) from None
    return snapshot


def _refused(url: str, method: str, error: SignalingError) -> StatsFailure:
    return StatsFailure(f"{url} refused {method}: {error}; pass an admin token (--token)", EXIT_REFUSED)


def _room_param(room: str | None) -> dict:
    return {"room": room} if room else {}
