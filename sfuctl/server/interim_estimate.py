"""An interim estimate of the bitrate a subscriber can receive, from its receiver reports and REMB.

Until transport-wide congestion control exists, the server learns about a subscriber's link only from loss and
REMB. Unknown at first (no limit: consumers start at their preferred layer). Sustained loss sets it to what
actually arrives; REMB caps it. Upgrades are trials: the estimate is raised to what one more layer needs, kept
if the next reports stay under the loss threshold for TRIAL_SECONDS, else reverted at the first bad report, and
the wait before the next trial doubles from BACKOFF_MIN to BACKOFF_MAX. Time is a parameter everywhere.
"""

from __future__ import annotations

from collections import deque

# RR fraction lost above which a report counts as bad: beyond ~10% NACK can no longer repair a stream in time
# (the figure, and where Galene's loss-based estimate starts to back off).
LOSS_THRESHOLD = 0.10
# Bad reports in a row before stepping down: one lossy report can be a burst, two (~2 s of RRs) are sustained.
BAD_REPORTS_TO_STEP_DOWN = 2
# How long a trial must stay under the threshold to be kept (two report intervals).
TRIAL_SECONDS = 2.0
# Wait before the first trial after a step down, doubled after each failed trial up to the max
# (mediasoup waits 10 s after a bandwidth-driven downgrade). A step down within BACKOFF_MIN of a kept trial
# counts as a failed trial too: the link took the trial's first seconds only because its queue absorbed them;
# a later step down (the link changed) starts again from BACKOFF_MIN.
BACKOFF_MIN = 10.0
BACKOFF_MAX = 60.0
# A trial also fails when the round-trip time grows this much over its floor before the trial: the link's queue
# is filling, and reverting before it overflows avoids the loss (and the freeze) the overflow would cause.
# 100 ms of standing queue is far past what delay-based estimators call overuse (GCC reacts to a few ms per frame).
TRIAL_DELAY_LIMIT_MS = 100.0
# The RTT floor is the lowest RTT of the last this many reports outside trials (so it follows a route change).
RTT_FLOOR_REPORTS = 10
# After a step down, allocate this share of what arrived: the link's queue must drain, so aim a little below it.
STEP_DOWN_HEADROOM = 0.9


class InterimEstimate:
    """Loss- and REMB-based available bitrate of one receive transport (a BandwidthEstimate)."""

    def __init__(self) -> None:
        self.loss_bps: float | None = None  # None: no loss seen, no limit
        self.remb_bps: float | None = None
        self.bad_reports = 0
        self.trials = 0
        self.failed_trials = 0
        self.backoff = BACKOFF_MIN
        self._last_change = float("-inf")
        self._kept_at = float("-inf")  # when the last trial was kept
        self._trial_since: float | None = None
        self._before_trial: float | None = None
        self._rtts: deque[float] = deque(maxlen=RTT_FLOOR_REPORTS)  # outside trials

    @property
    def in_trial(self) -> bool:
        return self._trial_since is not None

    def available_bps(self, now: float) -> float | None:
        limits = [b for b in (self.loss_bps, self.remb_bps) if b is not None]
        return min(limits) if limits else None

    def on_report(self, fraction_lost: float, sent_bps: float, now: float, rtt_ms: float | None = None) -> None:
        """One round of receiver reports: the share of the transport's packets lost, what was sent meanwhile, and
        the round-trip time they measured (None when none did)."""
        if self._trial_since is not None and rtt_ms is not None and self._rtts:
            if rtt_ms > min(self._rtts) + TRIAL_DELAY_LIMIT_MS:
                self._revert(now)
                return
        elif rtt_ms is not None:
            self._rtts.append(rtt_ms)
        if fraction_lost > LOSS_THRESHOLD:
            self.bad_reports += 1
            if self._trial_since is not None:
                self._revert(now)
            elif self.bad_reports >= BAD_REPORTS_TO_STEP_DOWN:
                arrived = sent_bps * (1 - fraction_lost) * STEP_DOWN_HEADROOM
                self.loss_bps = arrived if self.loss_bps is None else min(self.loss_bps, arrived)
                self.bad_reports = 0
                self._last_change = now
                if now - self._kept_at < BACKOFF_MIN:
                    self.failed_trials += 1
                    self.backoff = min(self.backoff * 2, BACKOFF_MAX)
                else:  # the link changed long after the last upgrade: probe at the first pace again
                    self.backoff = BACKOFF_MIN
            return
        self.bad_reports = 0
        if self._trial_since is not None and now - self._trial_since >= TRIAL_SECONDS:
            self._trial_since = self._before_trial = None
            self._last_change = self._kept_at = now

    def on_remb(self, bitrate_bps: float, now: float) -> None:
        """A REMB from the subscriber: a cap on everything sent to it."""
        self.remb_bps = bitrate_bps

    def wants_probe(self, now: float) -> bool:
        """A trial is due: something limits the estimate, no trial runs, and the backoff has passed."""
        return self.loss_bps is not None and self._trial_since is None and now - self._last_change >= self.backoff

    def start_probe(self, target_bps: float, now: float) -> None:
        if self.loss_bps is None or target_bps <= self.loss_bps:
            return
        self.trials += 1
        self._before_trial = self.loss_bps
        self.loss_bps = target_bps
        self._trial_since = now

    def _revert(self, now: float) -> None:
        self.failed_trials += 1
        self.loss_bps = self._before_trial
        self._trial_since = self._before_trial = None
        self.backoff = min(self.backoff * 2, BACKOFF_MAX)
        self._last_change = now
        self.bad_reports = 0

    def stats(self) -> dict:
        return {
            "available_bps": None if self.available_bps(0) is None else round(self.available_bps(0)),
            "loss_bps": None if self.loss_bps is None else round(self.loss_bps),
            "remb_bps": None if self.remb_bps is None else round(self.remb_bps),
            "in_trial": self.in_trial,
            "trials": self.trials,
            "failed_trials": self.failed_trials,
            "backoff_s": self.backoff,
        }
