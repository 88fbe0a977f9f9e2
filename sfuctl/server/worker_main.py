"""Entry point of one worker process (started by supervisor.py): a single-process server on internal ports."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from ..runtime import run, setup_logging
from .app import start_server
from .config import ServerConfig


async def _main(config: ServerConfig) -> None:
    server = await start_server(config, http_host="127.0.0.1")
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
    settings = json.loads(sys.argv[1])
    settings["rtc_ports"] = tuple(settings["rtc_ports"])
    setup_logging(sys.argv[2] if len(sys.argv) > 2 else "warning")
    run(_main(ServerConfig(**settings)))


if __name__ == "__main__":
    main()
