"""The embedded server of `sfuctl run`: `sfuctl serve --workers N` on free loopback ports, in worker processes
of its own (sfuctl.server.worker_main, the protocol of supervisor.py) started in sessions of their own.

Own sessions because Ctrl-C on a terminal signals the whole foreground process group: the workers must not
close while the bots are still leaving, so only `sfuctl run` hears it and stops the server last.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ..server.config import ServerConfig
from ..server.front import start_front
from ..server.supervisor import start_workers

LOG_LEVEL = "error"


@asynccontextmanager
async def embedded_server(workers: int, auth_secret: str | None = None) -> AsyncIterator[str]:
    """The signaling URL of a server with `workers` worker processes on 127.0.0.1; stopped on exit.
    With `auth_secret` it requires access tokens minted with it.

    One worker is reached directly; several sit behind a front in this process, as with `sfuctl serve`.
    Raises OSError when a worker does not start or the front cannot listen.
    """
    config = ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0), auth_secret=auth_secret)
    if workers == 1:
        (worker,) = await start_workers(config, 1, LOG_LEVEL, own_session=True)
        try:
            yield worker.ws_url
        finally:
            await worker.stop()
    else:
        front = await start_front(config, workers, LOG_LEVEL, own_session=True)
        try:
            yield front.url
        finally:
            await front.close()
