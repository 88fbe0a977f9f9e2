"""The embedded server of `sfuctl run`: `sfuctl serve --workers N` on free loopback ports, in worker processes
of its own (sfuctl.server.worker_main, the protocol of supervisor.py) started in sessions of their own.

Own sessions because Ctrl-C on a terminal signals the whole foreground process group: the workers must not
close while the bots are still leaving, so only `sfuctl run` hears it and stops the server last.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from ..server.config import ServerConfig
from ..server.front import Front, build_front_app
from ..server.supervisor import READY_TIMEOUT, WorkerProcess, split_port_range

WORKER_MODULE = "sfuctl.server.worker_main"
LOG_LEVEL = "error"


@asynccontextmanager
async def embedded_server(workers: int) -> AsyncIterator[str]:
    """The signaling URL of a server with `workers` worker processes on 127.0.0.1; stopped on exit.

    One worker is reached directly; several sit behind a front in this process, as with `sfuctl serve`.
    Raises OSError when a worker does not start or the front cannot listen.
    """
    config = ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0))
    started: list[WorkerProcess] = []
    try:
        for index, ports in enumerate(split_port_range(config.rtc_ports, workers)):
            started.append(await _spawn(index, dataclasses.replace(config, rtc_ports=ports)))
        if workers == 1:
            yield started[0].ws_url
        else:
            async with _front(config, started) as url:
                yield url
    finally:
        await asyncio.gather(*(worker.stop() for worker in started), return_exceptions=True)


@asynccontextmanager
async def _front(config: ServerConfig, workers: list[WorkerProcess]) -> AsyncIterator[str]:
    front = Front(config, workers)
    await front.start()
    runner = web.AppRunner(build_front_app(front), handle_signals=False, access_log=None)
    try:
        await runner.setup()
        await web.TCPSite(runner, config.host, 0).start()
        yield f"ws://{config.host}:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
        await front.close()


async def _spawn(index: int, config: ServerConfig) -> WorkerProcess:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", WORKER_MODULE, json.dumps(dataclasses.asdict(config)), LOG_LEVEL,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    assert process.stdout is not None
    try:
        ready = json.loads(await asyncio.wait_for(process.stdout.readline(), READY_TIMEOUT))
    except (asyncio.TimeoutError, ValueError):
        process.kill()
        await process.wait()
        raise OSError(f"worker {index} did not start (exit code {process.returncode})") from None
    return WorkerProcess(index, process, ready["http_port"], ready["rtc_port"])
