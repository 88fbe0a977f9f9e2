"""Entry point of one worker process (started by supervisor.py): a single-process server on internal ports."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import aiohttp

from ..runtime import run, setup_logging
from .app import start_server
from .config import IceServer, MediaPortsBusy, ServerConfig
from .pipes import Pipes
from .supervisor import CONFIG_VARIABLE, PIPES_VARIABLE
from .quotas import Quotas


async def _main(config: ServerConfig, index: int, earlier: list[tuple[int, int]]) -> None:
    try:
        server = await start_server(config, http_host="127.0.0.1", index=index)
    except MediaPortsBusy as exc:  # the parent names it to the user (supervisor.py); no traceback here
        print(json.dumps({"error": str(exc)}), flush=True)
        sys.exit(1)
    if config.internal_token is not None:  # one link to each earlier worker; the later ones link to this one
        server.worker.pipes = Pipes(server.worker, index, config.internal_token)
        try:
            for other, http_port in earlier:
                await server.worker.pipes.connect(other, http_port)
        except (OSError, ValueError, KeyError, asyncio.TimeoutError, aiohttp.ClientError) as exc:
            print(json.dumps({"error": f"worker {index} could not link to an earlier worker: {exc}"}), flush=True)
            await server.close()
            sys.exit(1)
    print(json.dumps({"http_port": server.port, "rtc_port": server.worker.rtc_port}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # The parent holds our stdin: end of file means it is gone, and so must we be.
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.buffer.read1(1024) else None)
    try:
        await stop.wait()
    finally:
        loop.remove_reader(sys.stdin.fileno())
        await server.close()


def main() -> None:
    settings = json.loads(os.environ.pop(CONFIG_VARIABLE))
    pipes = json.loads(os.environ.pop(PIPES_VARIABLE, '{"index": 0, "earlier": []}'))
    settings["rtc_ports"] = tuple(settings["rtc_ports"])
    settings["allowed_origins"] = tuple(settings["allowed_origins"])
    settings["announced_ips"] = tuple(settings["announced_ips"])
    settings["ice_servers"] = tuple(IceServer(**server) for server in settings["ice_servers"])
    settings["quotas"] = Quotas(**settings["quotas"])
    setup_logging(sys.argv[1] if len(sys.argv) > 1 else "warning")
    run(_main(ServerConfig(**settings), pipes["index"], [tuple(e) for e in pipes["earlier"]]))


if __name__ == "__main__":
    main()
