"""The estimate towards one subscriber over a changing link, as JSON and as an SVG plot (docs/congestion-control.md).

A real server and real bots in this process: a simulcast publisher (150/500/1500 kb/s, the test media) and a
subscriber whose link (both ways, the bots' shaper) goes 2 Mb/s -> 400 kb/s -> 2 Mb/s. Every 0.25 s it samples the
server's view of the subscriber's receive transport: the estimate, what arrived, the layer it forwards. The JSON
holds the link timeline and the samples; the SVG is drawn from the JSON alone (--from redraws an earlier run).

    python bench/estimate_plot.py [--down 8] [--up 18] [--seconds 32] [--json run.json] [--svg plot.svg]
    python bench/estimate_plot.py --from run.json --svg plot.svg

Run it in a network namespace of its own or on a quiet machine: `scripts/loopback python bench/estimate_plot.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from sfuctl.bots.config import BotPlan, BotsConfig
from sfuctl.bots.impairment import ImpairmentConfig, ImpairmentStep
from sfuctl.bots.observer import Observer
from sfuctl.bots.runner import run_bots
from sfuctl.media import MediaSpec, make_simulcast_media
from sfuctl.server.app import start_server
from sfuctl.server.config import ServerConfig

FAST_KBPS, SLOW_KBPS = 2000, 400
SAMPLE_INTERVAL = 0.25  # seconds between samples
# Plot geometry (pixels) and the bitrate axis' top (kb/s).
WIDTH, HEIGHT, MARGIN = 800, 360, 60
TOP_KBPS = 3000
LAYER_COLORS = ("#d62728", "#ff7f0e", "#2ca02c")  # layer 0, 1, 2


class Started(Observer):
    """When the run's offsets start counting."""

    def __init__(self) -> None:
        self.t0: float | None = None

    def started(self, t0: float) -> None:
        self.t0 = t0


async def run(down: float, up: float, seconds: float) -> dict:
    spec = MediaSpec(width=640, height=360, video_bitrate=1_500_000, duration=4.0, keyframe_interval=1.0)
    with tempfile.TemporaryDirectory() as directory:
        files = make_simulcast_media(spec, Path(directory))
        media = (*map(str, files.videos), str(files.audio))
        server = await start_server(ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0)))
        link = [(0.0, FAST_KBPS), (down, SLOW_KBPS), (up, FAST_KBPS)]
        network = tuple(ImpairmentStep(at, ImpairmentConfig(bandwidth_kbps=kbps)) for at, kbps in link)
        plans = [
            BotPlan(0, "publisher", "room-1", True, False, 0.0, False),
            BotPlan(1, "subscriber", "room-1", False, True, 0.3, True, network=network),
        ]
        config = BotsConfig(url=server.url, count=2, duration=seconds, media=media, seed=16, simulcast=True)
        watch = Started()
        task = asyncio.create_task(run_bots(config, watch, plans=plans))
        samples = []
        try:
            while not task.done():
                await asyncio.sleep(SAMPLE_INTERVAL)
                for transport in list(server.worker.transports):
                    video = [c for c in transport.consumers.values() if c.kind == "video"]
                    if watch.t0 is None or not video or transport.estimator is None:
                        continue
                    figures = transport.estimator.stats()
                    samples.append({
                        "t": round(time.monotonic() - watch.t0, 3),
                        "estimate_bps": figures["available_outgoing_bitrate_bps"],
                        "acked_bps": figures["acked_bps"],
                        "layer": video[0].current_layer,
                        "overuse_events": figures["overuse_events"],
                        "probe_results": figures["probe_results"],
                    })
        finally:
            report = await task
            await server.close()
    return {"link_kbps": link, "seconds": seconds, "failed_bots": report.failed, "samples": samples}


def svg(data: dict) -> str:
    """The plot: link capacity (grey steps), estimate (blue), what arrived (dotted), the layer as colored ticks."""
    seconds = data["seconds"]
    inner_w, inner_h = WIDTH - 2 * MARGIN, HEIGHT - 2 * MARGIN

    def x(t: float) -> float:
        return MARGIN + inner_w * min(t, seconds) / seconds

    def y(kbps: float) -> float:
        return MARGIN + inner_h * (1 - min(kbps, TOP_KBPS) / TOP_KBPS)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
    ]
    for kbps in range(0, TOP_KBPS + 1, 500):
        parts.append(f'<line x1="{MARGIN}" x2="{WIDTH - MARGIN}" y1="{y(kbps):.1f}" y2="{y(kbps):.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{MARGIN - 6}" y="{y(kbps) + 4:.1f}" text-anchor="end">{kbps}</text>')
    for t in range(0, int(seconds) + 1, 4):
        parts.append(f'<text x="{x(t):.1f}" y="{HEIGHT - MARGIN + 16}" text-anchor="middle">{t}</text>')
    parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT - 14}" text-anchor="middle">seconds</text>')
    parts.append(f'<text x="14" y="{HEIGHT / 2}" transform="rotate(-90 14 {HEIGHT / 2})" text-anchor="middle">kb/s</text>')
    link = data["link_kbps"] + [(seconds, data["link_kbps"][-1][1])]
    steps = []
    for (start, kbps), (end, _) in zip(link, link[1:]):
        steps += [f"{x(start):.1f},{y(kbps):.1f}", f"{x(end):.1f},{y(kbps):.1f}"]
    parts.append(f'<polyline points="{" ".join(steps)}" fill="none" stroke="#999" stroke-width="6" opacity="0.5"/>')
    samples = data["samples"]
    for key, style in (("acked_bps", 'stroke="#555" stroke-dasharray="3,3"'), ("estimate_bps", 'stroke="#1f77b4" stroke-width="2"')):
        points = [f"{x(s['t']):.1f},{y(s[key] / 1000):.1f}" for s in samples if s[key] is not None]
        parts.append(f'<polyline points="{" ".join(points)}" fill="none" {style}/>')
    for s in samples:
        if s["layer"] is not None:
            parts.append(f'<rect x="{x(s["t"]):.1f}" y="{HEIGHT - MARGIN + 22}" width="4" height="8" fill="{LAYER_COLORS[s["layer"]]}"/>')
    legend = [("#999", "link"), ("#1f77b4", "estimate"), ("#555", "arrived"), *zip(LAYER_COLORS, ("layer 0", "layer 1", "layer 2"))]
    for index, (color, label) in enumerate(legend):
        lx = MARGIN + 10 + index * 105
        parts.append(f'<rect x="{lx}" y="{MARGIN - 30}" width="12" height="12" fill="{color}"/>')
        parts.append(f'<text x="{lx + 16}" y="{MARGIN - 20}">{label}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--down", type=float, default=8.0, help="when the link drops to 400 kb/s (s)")
    parser.add_argument("--up", type=float, default=18.0, help="when it is 2 Mb/s again (s)")
    parser.add_argument("--seconds", type=float, default=32.0, help="length of the run (s)")
    parser.add_argument("--json", type=Path, help="write the run's JSON here")
    parser.add_argument("--svg", type=Path, help="write the plot here")
    parser.add_argument("--from", dest="source", type=Path, help="plot this JSON instead of running")
    args = parser.parse_args()
    data = json.loads(args.source.read_text()) if args.source else asyncio.run(run(args.down, args.up, args.seconds))
    if args.json:
        args.json.write_text(json.dumps(data, indent=1) + "\n")
    if args.svg:
        args.svg.write_text(svg(data))
    samples = data["samples"]
    print(f"{len(samples)} samples, {samples[-1]['overuse_events'] if samples else 0} over-uses, {data['failed_bots']} failed bots")


if __name__ == "__main__":
    main()
