"""A subscriber on a 400 kb/s link, with and without simulcast: what it loses, how long it freezes, which
encoding it gets.

One publisher bot (the default 640x360 VP8 media, ~560 kb/s, or with --simulcast the 1280x720 / 640x360 /
320x180 simulcast media) and one subscriber bot whose link is a 400 kb/s token bucket each way, on an embedded
server (one worker on 127.0.0.1). Loss is after NACK recovery (RFC 3550 counts over the interval samples the
bots take every second), over the whole run and after the first --settle seconds (the time a simulcast
subscriber needs to step down to the encoding that fits).

    python bench/simulcast_fit.py [--simulcast] [--duration 30] [--settle 10] [--bandwidth 400] [--json]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from sfuctl.bots.config import BotPlan, BotsConfig
from sfuctl.bots.impairment import ImpairmentConfig
from sfuctl.bots.observer import Collector
from sfuctl.bots.runner import media_paths, run_bots
from sfuctl.runtime import run
from sfuctl.scenario.embedded import embedded_server


async def measure(simulcast: bool, duration: float, settle: float, bandwidth: float) -> dict:
    async with embedded_server(1) as url:
        config = BotsConfig(url=url, room="fit", count=2, publishers=1, simulcast=simulcast, duration=duration, seed=3)
        config = replace(
            config, media=tuple(media_paths(config)), impairment=ImpairmentConfig(bandwidth_kbps=bandwidth), impaired=(1,)
        )
        plans = [
            BotPlan(0, "publisher", "fit", publish=True, subscribe=False, start_offset=0.0, impaired=False),
            BotPlan(1, "subscriber", "fit", publish=False, subscribe=True, start_offset=1.0, impaired=True),
        ]
        collector = Collector(wants_streams=True)
        report = await run_bots(config, collector, plans=plans)
        samples, started = collector.rows, collector.starts
    subscriber = next(bot for bot in report.bots if bot["name"] == "subscriber")
    result: dict = {"simulcast": simulcast, "bandwidth_kbps": bandwidth, "duration_s": duration, "settle_s": settle}
    for consumer in subscriber["consumers"]:
        kind = consumer["kind"]
        after = [
            row for at, sample in samples if at - started[0] >= settle for row in sample.consumers
            if row.bot == 1 and row.kind == kind
        ]
        expected_after = sum(r.expected for r in after)
        result[kind] = {
            "loss": round(consumer["packets_lost"] / consumer["expected"], 4) if consumer["expected"] else None,
            "loss_after_settle": round(sum(r.lost for r in after) / expected_after, 4) if expected_after else None,
            "freezes": consumer["freezes"],
            "freeze_s": round(consumer["freeze_ms"] / 1000, 2),
            "freeze_s_after_settle": round(sum(ms for at, ms in consumer["freeze_log"] if at >= settle) / 1000, 2),
            "sizes": consumer["sizes"],
        }
    return result


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--simulcast", action="store_true", help="the publisher sends 3 encodings")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=10.0, help="seconds before the 'after settle' figures")
    parser.add_argument("--bandwidth", type=float, default=400.0, help="the subscriber's link, kb/s each way")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    result = run(measure(args.simulcast, args.duration, args.settle, args.bandwidth))
    if args.json:
        print(json.dumps(result))
        return
    print(f"{'simulcast' if args.simulcast else 'single stream'}, subscriber on {args.bandwidth:g} kb/s, {args.duration:g} s:")
    for kind in ("video", "audio"):
        r = result.get(kind)
        if r is None:
            continue
        line = f"  {kind}: loss {r['loss']:.1%} (after {args.settle:g} s: {r['loss_after_settle']:.1%})"
        if kind == "video":
            layers = " -> ".join(f"{w}x{h} at {at:.1f} s" for at, w, h in r["sizes"])
            line += f", frozen {r['freeze_s']} s in {r['freezes']} freezes ({r['freeze_s_after_settle']} s after), {layers}"
        print(line)


if __name__ == "__main__":
    cli()
