"""Chromium publishing on a shaped uplink: how long until what reaches the server is 80% of the link, with the
server's transport feedback (transport-cc answered) and on its receiver reports alone (`--no-transport-cc`).

    python bench/browser_uplink.py [--runs 3] [--link-kbps 1500] [--seconds 40] [--json]

One Chromium whose fake camera plays the tests' detailed source (its encoder takes whatever bitrate it is
given); per run a server of its own and the tests' UDP relay with the bots' shaper (a token bucket, 0.5 s
drop-tail queue) on the page's uplink, the page publishing through it. Every 0.25 s the bench reads the media
bytes (RTP of the negotiated payload types: no retransmission, no probe padding) that reached the page's
producers; reported per run: the seconds from the first byte until a 1 s window
carries 80% of the link (the figure of the congestion-control issue), then over the next 5 s what arrived
(share of the link), the datagrams the shaper's queue dropped and Chromium's own estimate
(availableOutgoingBitrate). Runs alternate with / without, in one sitting; a run that does not reach 80% within
--seconds counts as --seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sfuctl.server.app import start_server
from sfuctl.server.config import ServerConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.browser import Chromium, unavailable_reason  # noqa: E402 (the tests' headless Chromium)
from tests.peers import UdpRelay  # noqa: E402 (the tests' relay, with the bots' shaper)
from tests.test_browser import (  # noqa: E402
    AVAILABLE_OUTGOING_BITRATE,
    RECORD_PEER_CONNECTIONS,
    page_url,
    redirect_answers,
    write_detailed_y4m,
)

SAMPLE = 0.25  # seconds between two readings of the server's byte counter
WINDOW = 1.0  # the rate is over this many seconds of readings
REACHED = 0.8  # the share of the link to reach
AFTER = 5.0  # seconds watched after reaching it


async def one_run(browser: Chromium, transport_cc: bool, link_kbps: float, seconds: float) -> dict:
    """One page publishing through a relay shaped at `link_kbps`; its figures."""
    server = await start_server(
        ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0), consent_timeout=5.0, transport_cc=transport_cc)
    )
    relay = UdpRelay(uplink_kbps=link_kbps)
    media_address = f"127.0.0.1 {server.worker.rtc_port}"
    relay_address = await relay.start(media_address)
    page = await browser.open(
        page_url(server, "uplink", "pub"),
        redirect_answers(media_address, relay_address, answers="producers"),
        RECORD_PEER_CONNECTIONS,
    )
    try:
        return await watch(server, relay, page, link_kbps * 1000, seconds)
    finally:
        await page.close()
        relay.close()
        await server.close()


async def watch(server, relay: UdpRelay, page, link_bps: float, seconds: float) -> dict:
    """Read the publisher's transport until the rate reached REACHED of the link and AFTER more seconds passed."""
    readings: list[tuple[float, int]] = []  # (time, media bytes the publisher's producers received)
    first = reached = None
    estimates: list[float] = []
    dropped_at_reach = 0
    deadline = time.monotonic() + seconds + 30  # joining and connecting come first
    while time.monotonic() < deadline:
        await asyncio.sleep(SAMPLE)
        now = time.monotonic()
        transports = [t for t in list(server.worker.transports) if t.producers_by_mid]
        received = sum(p.meter.bytes for p in transports[0].producers_by_mid.values()) if transports else 0
        if received and first is None:
            first, deadline = now, now + seconds
        if first is None:
            continue
        readings.append((now, received))
        old = [r for r in readings if r[0] <= now - WINDOW]
        rate = (received - old[-1][1]) * 8 / (now - old[-1][0]) if old else 0.0
        if reached is None and rate >= REACHED * link_bps:
            reached, deadline = now, now + AFTER
            dropped_at_reach = relay.uplink.rtp_dropped
            start_bytes = received
        if reached is not None:
            estimates.append(await page.evaluate(AVAILABLE_OUTGOING_BITRATE) or 0.0)
    if first is None:
        raise RuntimeError("the page never sent media to the server")
    if reached is None:
        return {"seconds_to_80": seconds, "reached": False, "dropped_total": relay.uplink.rtp_dropped}
    after = readings[-1][0] - reached
    return {
        "seconds_to_80": round(reached - first, 2),
        "reached": True,
        "share_after": round((readings[-1][1] - start_bytes) * 8 / after / link_bps, 3) if after > 0 else None,
        "dropped_after": relay.uplink.rtp_dropped - dropped_at_reach,
        "dropped_total": relay.uplink.rtp_dropped,
        "estimate_after_bps": round(statistics.median(estimates)) if estimates else None,
    }


async def main(args: argparse.Namespace) -> dict:
    reason = unavailable_reason()
    if reason is not None:
        raise SystemExit(reason)
    with tempfile.TemporaryDirectory() as directory:
        source = Path(directory) / "detailed.y4m"
        write_detailed_y4m(source)
        browser = Chromium(extra_flags=(f"--use-file-for-fake-video-capture={source}",))
        browser.start()
        runs: dict[str, list[dict]] = {"transport-cc": [], "receiver-reports": []}
        try:
            for index in range(args.runs):
                for name, transport_cc in (("transport-cc", True), ("receiver-reports", False)):
                    run = await one_run(browser, transport_cc, args.link_kbps, args.seconds)
                    runs[name].append(run)
                    if not args.json:
                        print(f"run {index + 1} {name}: {run}", flush=True)
        finally:
            browser.stop()
    return {
        "link_kbps": args.link_kbps,
        "runs": runs,
        "median_seconds_to_80": {name: statistics.median(r["seconds_to_80"] for r in rs) for name, rs in runs.items()},
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each, alternated")
    parser.add_argument("--link-kbps", type=float, default=1500.0, help="the shaped uplink")
    parser.add_argument("--seconds", type=float, default=40.0, help="give up on reaching 80%% after this long")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser.parse_args()


if __name__ == "__main__":
    options = parse_args()
    result = asyncio.run(main(options))
    print(json.dumps(result, indent=None if options.json else 2))
