"""`sfuctl serve` in a child process, for the tests of what only a real process shows (worker processes, signals)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from typing import IO

# Seconds a server may take to print the line that says it listens (workers start in turn on a busy machine).
START_TIMEOUT = 30.0


async def start_serve(*args: str) -> tuple[subprocess.Popen, str]:
    """Start `sfuctl serve ARGS` and return it with the line it prints once it listens; a server that prints
    nothing within START_TIMEOUT is killed and fails the test. Its later stderr is read and dropped (a full pipe
    would stop its event loop)."""
    process = subprocess.Popen([sys.executable, "-m", "sfuctl.cli", "serve", *args], stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    try:
        line = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, process.stderr.readline), START_TIMEOUT)
    except asyncio.TimeoutError:
        process.kill()
        process.wait()
        raise AssertionError(f"sfuctl serve {' '.join(args)} printed nothing in {START_TIMEOUT:.0f} s") from None
    threading.Thread(target=_drain, args=(process.stderr,), daemon=True).start()
    return process, line


def _drain(stream: IO[str]) -> None:
    for _ in stream:
        pass
