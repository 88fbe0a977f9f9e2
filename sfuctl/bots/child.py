"""A bot process started by run_bots: `python -m sfuctl.bots.child`, one JSON object per line each way.

stdin: {"config", "plans", "media", "streams"}, then {"start": unix time}, then "stop" (EOF also stops).
stdout: {"type": "ready"} or {"type": "error", "message"}; then "join", "counters", "streams" (when asked
for) and finally "report".
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time

from sfuctl.runtime import run

from .config import BotPlan, BotsConfig, load_layers, load_tracks
from .group import BotGroup, JoinEvent
from .observer import Observer
from .stats import RoomCounters, StreamSample

LINE_LIMIT = 64 * 1024 * 1024


def emit(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def _main() -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    setup = json.loads(await reader.readline())
    config = BotsConfig.from_dict(setup["config"])
    plans = [BotPlan.from_dict(p) for p in setup["plans"]]
    try:
        tracks = load_tracks(setup["media"], audio=config.audio, video=config.video)
        layers = load_layers(setup["media"]) if config.simulcast else ()
    except ValueError as exc:
        emit({"type": "error", "message": str(exc)})
        return 1
    emit({"type": "ready"})

    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    line = await reader.readline()
    if not line.startswith(b"{"):  # "stop" or EOF before the start: nothing ran
        emit({"type": "report", "bots": []})
        return 0
    start_at = loop.time() + (json.loads(line)["start"] - time.time())

    async def watch_stdin() -> None:
        while True:
            line = await reader.readline()
            if not line or line.strip() == b"stop":
                stop.set()
                return

    rounds = iter(range(1 << 62))

    def on_counters(counters: dict[str, RoomCounters]) -> None:
        emit({"type": "counters", "n": next(rounds), "rooms": {room: c.to_dict() for room, c in counters.items()}})

    watcher = asyncio.create_task(watch_stdin())
    group = BotGroup(
        config, plans, tracks, layers=layers, observer=_Relay(bool(setup.get("streams"))), on_counters=on_counters
    )
    bots = await group.run(stop, start_at=start_at)
    watcher.cancel()
    emit({"type": "report", "bots": bots})
    return 0


class _Relay(Observer):
    """Writes the group's joins and (when the parent asked for them) per-stream rows to stdout."""

    def __init__(self, wants_streams: bool) -> None:
        self.wants_streams = wants_streams

    def joined(self, event: JoinEvent) -> None:
        emit({"type": "join", "event": event.to_dict()})

    def streams(self, sample: StreamSample) -> None:
        emit({"type": "streams", **sample.to_dict()})


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(run(_main()))


if __name__ == "__main__":
    main()
