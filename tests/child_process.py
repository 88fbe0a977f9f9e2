"""An `sfuctl` command the tests run as a child process, never left running after its test."""

from __future__ import annotations

import asyncio


async def finish(process: asyncio.subprocess.Process, timeout: float) -> tuple[bytes, bytes]:
    """Its stdout and stderr once it exits; killed (and reaped) when it runs past `timeout`, then TimeoutError."""
    try:
        return await asyncio.wait_for(process.communicate(), timeout)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
        raise
