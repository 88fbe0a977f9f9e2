"""Worker processes: one per core, each a full single-process server on an internal port and its own UDP port.

`sfuctl serve --workers N` starts N of them and puts the front (front.py) on the public port. A worker exits
when its stdin closes, so workers never outlive a crashed parent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys
from dataclasses import dataclass

from .config import MediaPortsBusy, ServerConfig

READY_TIMEOUT = 30.0
CONFIG_VARIABLE = "SFUCTL_WORKER_CONFIG"  # a worker's ServerConfig as JSON
PIPES_VARIABLE = "SFUCTL_WORKER_PIPES"  # a worker's index and the earlier workers' (index, internal port), as JSON
# A worker closes its transports and websockets within ~1 s of SIGTERM (app.CLOSE_TIMEOUT); one that takes longer
# is killed, so that the whole server stops within 2 s.
STOP_TIMEOUT = 1.5


@dataclass
class WorkerProcess:
    """A running worker: where its signaling listens (internal, 127.0.0.1) and its media port."""

    index: int
    process: asyncio.subprocess.Process
    http_port: int
    rtc_port: int

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.http_port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT)
            except asyncio.TimeoutError:
                self.process.kill()
                await self.process.wait()


def split_port_range(ports: tuple[int, int], workers: int) -> list[tuple[int, int]]:
    """Give each worker a disjoint slice of the media port range; ValueError when there are too few ports."""
    first, last = ports
    if first == 0 and last == 0:
        return [(0, 0)] * workers
    count = last - first + 1
    if count < workers:
        raise ValueError(f"--rtc-port-range {first}-{last} has {count} port(s) for {workers} workers: each worker "
                         f"takes its own slice of the range (at least one port); give {first}-{first + workers - 1} "
                         f"or wider, or fewer --workers")
    size = count // workers
    return [(first + i * size, first + (i + 1) * size - 1 if i < workers - 1 else last) for i in range(workers)]


async def start_workers(
    config: ServerConfig, count: int, log_level: str = "warning", own_session: bool = False
) -> list[WorkerProcess]:
    """Start `count` worker processes and wait until each reports its ports.

    `own_session` puts each worker in a session of its own, out of reach of a terminal's Ctrl-C (for a parent
    that must stop them last, like `sfuctl run`).
    """
    workers: list[WorkerProcess] = []
    try:
        for index, ports in enumerate(split_port_range(config.rtc_ports, count)):
            worker_config = dataclasses.replace(config, port=0, rtc_ports=ports)
            earlier = [(w.index, w.http_port) for w in workers]
            workers.append(await _spawn(index, worker_config, log_level, own_session, earlier))
    except BaseException:
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
        raise
    return workers


async def _spawn(
    index: int, config: ServerConfig, log_level: str, own_session: bool, earlier: list[tuple[int, int]]
) -> WorkerProcess:
    # The settings (secrets included) go in the environment, which other users cannot read, not in argv.
    # A worker links to each earlier one (pipes.py) before it reports ready.
    environment = {
        **os.environ,
        CONFIG_VARIABLE: json.dumps(dataclasses.asdict(config)),
        PIPES_VARIABLE: json.dumps({"index": index, "earlier": earlier}),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sfuctl.server.worker_main",
        log_level,
        env=environment,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        start_new_session=own_session,
    )
    try:
        line = await asyncio.wait_for(process.stdout.readline(), READY_TIMEOUT)
        ready = json.loads(line)
    except (asyncio.TimeoutError, ValueError):
        process.kill()
        await process.wait()
        raise OSError(f"worker {index} did not start (exit code {process.returncode}); run with --log-level debug") from None
    if "error" in ready:
        await process.wait()
        raise MediaPortsBusy(f"{ready['error']} (the slice of worker {index + 1})")
    return WorkerProcess(index, process, ready["http_port"], ready["rtc_port"])
