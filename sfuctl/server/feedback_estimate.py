"""FeedbackEstimate: the allocator's BandwidthEstimate (allocator.py) from a receive transport's transport-wide
congestion control (BandwidthEstimator: delay- and loss-based, REMB as a cap when the peer sends one).

An upgrade is never tried blind: before a consumer may go a layer up, the transport sends a probe cluster at
what the allocation with that layer needs (a little more); only when the probe got through does the estimate
rise, and the layer follows at the next round. No probe while the path over-uses or another is awaited, and at
most one every PROBE_INTERVAL. Time is a parameter everywhere.
"""

from __future__ import annotations

from collections.abc import Callable

from ..rtc.bandwidth_estimator import BandwidthEstimator
from ..rtc.probe_controller import ProbeCluster

# A probe before an upgrade aims this much above what the allocation with one more layer needs: a layer's
# bitrate swings with its keyframes, and a result just at the target would leave no room for them. No more: a
# probe that fills the link builds a queue, and the over-use it shows pulls the estimate down again.
PROBE_HEADROOM = 1.1
# The padding of a probe is at least this share of the target (the media rate is measured, not known ahead).
MIN_PADDING_SHARE = 0.25
# At most one upgrade probe in PROBE_INTERVAL. A probe fails when no result reaching its target came within
# PROBE_RESULT_WAIT (the estimate may be under it again by then: the probe's own queue can show as over-use):
# then the interval doubles, up to PROBE_INTERVAL_MAX (a link that cannot take the next layer is not probed
# every 2 s); a probe that reaches its target sets it back to PROBE_INTERVAL.
PROBE_INTERVAL = 2.0
PROBE_INTERVAL_MAX = 8.0
PROBE_RESULT_WAIT = 1.0


class FeedbackEstimate:
    """A BandwidthEstimate backed by `estimator`; `send_probes(clusters)` sends clusters on the transport."""

    def __init__(self, estimator: BandwidthEstimator, send_probes: Callable[[list[ProbeCluster]], None]) -> None:
        self.estimator = estimator
        self.probes_requested = 0
        self._send_probes = send_probes
        self._last_probe = float("-inf")
        self._interval = PROBE_INTERVAL
        self._target = 0.0  # what the last probe was to show
        self._pending = False  # its outcome is not judged yet
        self._results_before = 0  # the estimator's probe results when it started

    def available_bps(self, now: float) -> float | None:
        return self.estimator.available_bps

    def on_remb(self, bitrate_bps: float, now: float) -> None:
        self.estimator.on_remb(bitrate_bps)

    def wants_probe(self, now: float) -> bool:
        since = now - self._last_probe
        if self._pending and since >= PROBE_RESULT_WAIT:
            self._pending = False
            estimator = self.estimator
            if estimator.probe.results > self._results_before and estimator.last_probe_bps >= self._target:
                self._interval = PROBE_INTERVAL
            else:
                self._interval = min(self._interval * 2, PROBE_INTERVAL_MAX)
        return since >= self._interval

    def start_probe(self, target_bps: float, now: float) -> None:
        """Probe at `target_bps` (with headroom; the media already sent counts in the cluster, so the padding
        makes up the rest); the estimate rises only from the probe's result."""
        media = self.estimator.acked_bps or 0.0
        padding = max(target_bps * PROBE_HEADROOM - media, target_bps * MIN_PADDING_SHARE)
        clusters = self.estimator.request_probe(target_bps, now, padding)
        if clusters:
            self._results_before = self.estimator.probe.results
            self._last_probe = now
            self._target = target_bps
            self._pending = True
            self.probes_requested += 1
            self._send_probes(clusters)
