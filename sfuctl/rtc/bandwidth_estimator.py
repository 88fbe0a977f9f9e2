"""BandwidthEstimator: the bitrate one transport can send, from transport feedback (Google Congestion Control).

The estimate is the lower of a delay-based one (delay_based.py: over-use of the path's queue -> AIMD) and a
loss-based cap, capped by REMB when the receiver sends it. It starts at START_BPS; the probe controller's
results lift it at once when a probe got through. The owner feeds it feedback (`on_feedback`, via SendHistory's
PacketResults), RTTs and REMBs, asks it which probe clusters to send (`probes`), and reads `available_bps`.
"""

from __future__ import annotations

from collections import deque
from operator import attrgetter

from .delay_based import OVERUSING, AimdRateControl, InterArrival, TrendlineDetector
from .probe_controller import ProbeCluster, ProbeController
from .send_history import PacketResult

# A transport starts here (libwebrtc's and the start rate) and stays within MIN..MAX.
START_BPS = 300_000.0
MIN_BPS = 30_000.0
MAX_BPS = 20_000_000.0
# What the receiver got (the acknowledged bitrate; the delay-based side lowers its rate to a share of it on
# over-use) is measured over this much of its arrival timeline, and over at least ACKED_MIN_SPAN before the
# first window is complete.
ACKED_WINDOW = 0.5
ACKED_MIN_SPAN = 0.15
# What arrived over a longer stretch (at least ARRIVED_MIN_SPAN of it) is the loss-based cap's floor: loss says
# the sender sends too much, never that the link carries less than it was just seen to carry. Half a second of
# arrivals can dip by a third (a busy receiver, duplicate retransmissions it discards); two seconds hardly move.
ARRIVED_WINDOW = 2.0
ARRIVED_MIN_SPAN = 1.0
# Loss-based cap (GCC, draft-ietf-rmcat-gcc-02 section 6): loss is measured over at least LOSS_MIN_PACKETS
# reported packets. When it stays above LOSS_HIGH for LOSS_SUSTAINED measurements in a row (beyond ~10% NACK
# can no longer repair a stream in time; one bad round is noise), the cap becomes the estimate x (1 - loss / 2),
# at most once per LOSS_DECREASE_INTERVAL + RTT, but never under what arrived (above). Under LOSS_LOW it grows
# 8% per second and goes away once above the delay-based estimate; in between it holds.
LOSS_MIN_PACKETS = 20
LOSS_LOW = 0.02
LOSS_HIGH = 0.10
LOSS_SUSTAINED = 2
LOSS_DECREASE_INTERVAL = 0.3
LOSS_INCREASE = 1.08
_arrival = attrgetter("arrival")  # the sort key of received PacketResults


class BandwidthEstimator:
    """Delay- and loss-based estimate of one transport's available outgoing bitrate."""

    def __init__(self, start_bps: float = START_BPS, max_bps: float = MAX_BPS) -> None:
        self.max_bps = max_bps
        self.delay_bps = start_bps
        self.loss_cap_bps: float | None = None
        self.remb_bps: float | None = None
        self.acked_bps: float | None = None
        self.loss_fraction = 0.0  # over the last LOSS_MIN_PACKETS or more reported packets
        # From sending the newest packet a feedback reports received to receiving that feedback (seconds): the
        # round trip with the path's queue, as the last feedback saw it (None before one).
        self.feedback_rtt: float | None = None
        self.overuse_events = 0  # the detector entering over-use
        self.state = "normal"
        self.probe = ProbeController(start_bps, max_bps)
        self.last_probe_bps = 0.0  # the last probe result (the estimate may have moved since)
        self._inter_arrival = InterArrival()
        self._detector = TrendlineDetector()
        self._aimd = AimdRateControl(start_bps)
        self._acked = ArrivalRate(ACKED_WINDOW, ACKED_MIN_SPAN)
        self._arrived = ArrivalRate(ARRIVED_WINDOW, ARRIVED_MIN_SPAN)
        self._high_loss_rounds = 0  # loss measurements above LOSS_HIGH in a row
        self._lost = 0
        self._reported = 0
        self._last_loss_decrease = float("-inf")
        self._last_loss_update: float | None = None
        self._rtt = 0.2

    @property
    def available_bps(self) -> float:
        rate = self.delay_bps
        if self.loss_cap_bps is not None:
            rate = min(rate, self.loss_cap_bps)
        if self.remb_bps is not None:
            rate = min(rate, self.remb_bps)
        return min(max(rate, MIN_BPS), self.max_bps)

    @property
    def arrived_bps(self) -> float | None:
        """What arrived over the last ARRIVED_WINDOW (the loss-based cap's floor)."""
        return self._arrived.bps

    def on_rtt(self, rtt: float) -> None:
        """A round-trip time (seconds) measured on this transport."""
        self._rtt = rtt
        self._aimd.rtt = rtt

    def on_remb(self, bitrate_bps: float) -> None:
        self.remb_bps = bitrate_bps

    def probes(self, now: float) -> list[ProbeCluster]:
        """Probe clusters to send now (the initial ones at the first call)."""
        return self.probe.due(self.available_bps, now)

    def request_probe(self, target_bps: float, now: float, padding_bps: float | None = None) -> list[ProbeCluster]:
        """Clusters that test whether `target_bps` gets through (none while over-using or already probing), of
        padding at `padding_bps` (default: the target) on top of the media."""
        if self.state == OVERUSING or target_bps <= self.available_bps:
            return []
        return self.probe.request(target_bps if padding_bps is None else padding_bps, now)

    def on_feedback(self, results: list[PacketResult], now: float) -> None:
        """One feedback packet's results (SendHistory.on_feedback), in sequence order, received at `now`."""
        if not results:
            return
        received = [r for r in results if r.arrival is not None]
        if received:
            self.feedback_rtt = now - max(r.send_time for r in received)
        self._acked.add(received)
        self._arrived.add(received)
        self.acked_bps = self._acked.bps
        probe_bps = self.probe.on_results(results)
        if probe_bps is not None:
            self.last_probe_bps = probe_bps
            if probe_bps > self.delay_bps:
                self.delay_bps = min(probe_bps, self.max_bps)
                self._aimd.set_estimate(self.delay_bps, now)
            if self.loss_cap_bps is not None and probe_bps > self.loss_cap_bps:
                self.loss_cap_bps = probe_bps
        self._update_delay(sorted(received, key=_arrival), now)
        self._update_loss(len(results) - len(received), len(results), now)

    def _update_delay(self, received: list[PacketResult], now: float) -> None:
        inter_arrival = self._inter_arrival
        state = self.state
        for result in received:
            deltas = inter_arrival.add(result.send_time, result.arrival)
            if deltas is not None:
                state = self._detector.update(*deltas)
        if state == OVERUSING and self.state != OVERUSING:
            self.overuse_events += 1
            self.probe.stop()
        self.state = state
        if state == OVERUSING and not self._aimd.time_to_reduce(self.acked_bps, now):
            return
        self.delay_bps = min(max(self._aimd.update(state, self.acked_bps, now), MIN_BPS), self.max_bps)
        self._aimd.bitrate_bps = self.delay_bps

    def _update_loss(self, lost: int, reported: int, now: float) -> None:
        self._lost += lost
        self._reported += reported
        if self._reported < LOSS_MIN_PACKETS:
            return
        self.loss_fraction = self._lost / self._reported
        self._lost = self._reported = 0
        elapsed = 0.0 if self._last_loss_update is None else now - self._last_loss_update
        self._last_loss_update = now
        if self.loss_fraction > LOSS_HIGH:
            self._high_loss_rounds += 1
            if (
                self._high_loss_rounds >= LOSS_SUSTAINED
                and now - self._last_loss_decrease >= LOSS_DECREASE_INTERVAL + self._rtt
            ):
                lowered = self.available_bps * (1 - self.loss_fraction / 2)
                self.loss_cap_bps = max(lowered, self.arrived_bps or 0.0, MIN_BPS)
                self._last_loss_decrease = now
            return
        self._high_loss_rounds = 0
        if self.loss_fraction < LOSS_LOW and self.loss_cap_bps is not None:
            self.loss_cap_bps *= LOSS_INCREASE ** min(elapsed, 1.0)
            if self.loss_cap_bps >= self.delay_bps:
                self.loss_cap_bps = None

    def stats(self) -> dict:
        return {
            "available_outgoing_bitrate_bps": round(self.available_bps),
            "delay_based_bps": round(self.delay_bps),
            "loss_based_bps": None if self.loss_cap_bps is None else round(self.loss_cap_bps),
            "acked_bps": None if self.acked_bps is None else round(self.acked_bps),
            "arrived_bps": None if self.arrived_bps is None else round(self.arrived_bps),
            "loss_fraction": round(self.loss_fraction, 4),
            "overuse_events": self.overuse_events,
            "probe_clusters": self.probe.clusters_sent,
            "probe_results": self.probe.results,
        }


class ArrivalRate:
    """The bitrate that arrived over the last `window` seconds of the receiver's timeline (None until the packets
    span `min_span`)."""

    __slots__ = ("bps", "_window", "_min_span", "_arrivals", "_bytes", "_latest")

    def __init__(self, window: float, min_span: float) -> None:
        self.bps: float | None = None
        self._window = window
        self._min_span = min_span
        self._arrivals: deque[tuple[float, int]] = deque()  # (arrival, size)
        self._bytes = 0
        self._latest = float("-inf")

    def add(self, received: list[PacketResult]) -> None:
        """Packets reported received (arrival not None)."""
        arrivals = self._arrivals
        latest = self._latest
        total = self._bytes
        for result in received:
            arrival = result.arrival
            arrivals.append((arrival, result.size))  # type: ignore[arg-type]
            total += result.size
            if arrival > latest:  # type: ignore[operator]
                latest = arrival  # type: ignore[assignment]
        if not arrivals:
            return
        start = latest - self._window
        while arrivals[0][0] < start:
            total -= arrivals.popleft()[1]
        self._latest = latest
        self._bytes = total
        span = latest - arrivals[0][0]
        if span >= self._min_span:
            self.bps = total * 8 / span
