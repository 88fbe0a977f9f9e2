"""CPU per reported packet of the send side of transport-wide congestion control, in one process: SendHistory
(the sequence and send time of every packet, the match of each feedback packet) and BandwidthEstimator (rate
windows, packet groups, trendline, AIMD), fed with one subscriber's traffic and the transport feedback that
ArrivalRecorder builds for it.

    python bench/feedback_cost.py [--seconds 120] [--runs 3]

The traffic is the default media's: 640x360 VP8 at 30 frames/s (2-3 packets a frame, 73 packets/s) and Opus
(50 packets/s); every packet arrives 20-23 ms after it was sent, and the receiver reports every 100 ms. The
feedback is built and parsed first (real bytes), then the sends and the feedback are replayed in time order
and timed: `SendHistory.add` per packet sent, `SendHistory.on_feedback` and `BandwidthEstimator.on_feedback`
per feedback packet. Compare trees in one sitting (docs/performance.md).
"""

from __future__ import annotations

import argparse
import random
import time

from sfuctl.rtc.arrival_recorder import ArrivalRecorder
from sfuctl.rtc.bandwidth_estimator import BandwidthEstimator
from sfuctl.rtc.rtcp import parse_compound
from sfuctl.rtc.send_history import SendHistory
from sfuctl.rtc.transport_feedback import TransportFeedback

FRAME_RATE = 30  # video frames a second, 2 packets each and 3 every third one (73 packets/s)
AUDIO_RATE = 50  # Opus packets a second
VIDEO_SIZE = 1000  # bytes, the default media's mean VP8 packet with its header
AUDIO_SIZE = 180  # bytes, an Opus packet with its header
FEEDBACK_INTERVAL = 0.1  # seconds, as ArrivalRecorder's owners send it
PATH_DELAY = 0.02  # seconds from send to arrival, plus up to JITTER
JITTER = 0.003
START = 1000.0  # the sender's clock at the first packet


def sends(seconds: float) -> list[tuple[float, int]]:
    """(send time, size) of every packet, in send order."""
    video = [(START + frame / FRAME_RATE + k * 0.0005, VIDEO_SIZE)
             for frame in range(int(seconds * FRAME_RATE)) for k in range(3 if frame % 3 == 0 else 2)]
    audio = [(START + n / AUDIO_RATE + 0.003, AUDIO_SIZE) for n in range(int(seconds * AUDIO_RATE))]
    return sorted(video + audio)


def feedback(packets: list[tuple[float, int]], seed: int) -> list[tuple[float, TransportFeedback]]:
    """(time it reaches the sender, packet) of the receiver's transport feedback about `packets`."""
    rng = random.Random(seed)
    recorder = ArrivalRecorder(1, 2)
    reports: list[tuple[float, TransportFeedback]] = []
    due = START + FEEDBACK_INTERVAL
    for sequence, (sent, _) in enumerate(packets):
        while sent >= due:
            for data in recorder.feedback(due):
                reports += [(due + PATH_DELAY, p) for p in parse_compound(data) if isinstance(p, TransportFeedback)]
            due += FEEDBACK_INTERVAL
        recorder.record(sequence & 0xFFFF, sent + PATH_DELAY + rng.random() * JITTER)
    return reports


def measure(seconds: float, seed: int) -> dict:
    packets = sends(seconds)
    reports = feedback(packets, seed)
    events = sorted([(t, 0, size) for t, size in packets] + [(t, 1, report) for t, report in reports],
                    key=lambda event: event[:2])
    history, estimator = SendHistory(), BandwidthEstimator()
    started = time.process_time()
    for now, kind, item in events:
        if kind == 0:
            history.add(item, now)  # type: ignore[arg-type]
        else:
            estimator.on_feedback(history.on_feedback(item, now), now)  # type: ignore[arg-type]
    used = time.process_time() - started
    reported = sum(len(report.arrivals) for _, report in reports)
    return {"us_per_reported_packet": round(used * 1e6 / reported, 3), "reported": reported,
            "estimate_bps": round(estimator.available_bps), "unknown": history.unknown}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="traffic replayed per run")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results = [measure(args.seconds, seed) for seed in range(args.runs)]
    figures = sorted(r["us_per_reported_packet"] for r in results)
    print(f"{figures} µs CPU per reported packet over {results[0]['reported']:,} packets "
          f"(estimate at the end {results[0]['estimate_bps']:,} bit/s, {results[0]['unknown']} unknown)")


if __name__ == "__main__":
    main()
