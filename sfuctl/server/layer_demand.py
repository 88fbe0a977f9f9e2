"""LayerDemand: which encodings of a simulcast producer its publisher should send, from what its consumers take.

An encoding is wanted while some consumer forwards it or targets it (a switch waiting for its keyframe: an
upgrade the allocator chose, after its probe got through when the transport probes). A wanted encoding that is
paused resumes at once; one nobody wanted for PAUSE_HOLD seconds is paused. The lowest encoding is never paused:
it is the smallest share of what the publisher sends, and it keeps the producer's quality score and the
publisher's reports going. Each change is handed to `on_change` (the publisher is told: docs/protocol.md).

A paused encoding stays a candidate for upgrades: the allocator reads it at its mean bitrate before the pause
(`bitrate`), until its packets arrive again or RESUME_GRACE after it was resumed (a publisher that did not resume
it is then seen as not sending it, as before). Time is a parameter everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

# An encoding nobody took for this long is paused: an allocation that goes down and up again within it (a link
# that flaps, a probe that fails and succeeds at the next try) does not toggle the publisher's encoder.
PAUSE_HOLD = 3.0
# After a resume, the bitrate from before the pause stands in for the measured one this long while none of the
# encoding's packets arrived: the notification's way to the publisher and its first frames back.
RESUME_GRACE = 5.0
# The bitrate held for a paused encoding is a moving mean of its measured ones (this weight on each new interval):
# one interval's figure swings with keyframes, and a high one held would keep the step up to it from fitting.
MEAN_WEIGHT = 0.25


class LayerDemand:
    """The pause state of `count` encodings (0 is the lowest); `on_change(active)` gets every new state."""

    def __init__(self, count: int, on_change: Callable[[tuple[bool, ...]], None]) -> None:
        self.active = [True] * count
        self.pauses = [0] * count
        self._on_change = on_change
        self._held_bps = [0.0] * count  # what a paused (or just resumed) encoding sent before it was paused
        self._mean_bps = [0.0] * count  # each encoding's moving mean bitrate while it is sent
        self._last_bps = [0.0] * count  # its measured bitrate at the previous round
        self._unwanted_since: list[float | None] = [None] * count
        self._resumed_at: list[float | None] = [None] * count

    def bitrate(self, index: int, measured_bps: float) -> float:
        """What the allocator should count for encoding `index`: its measured bitrate, or the held one."""
        return measured_bps if measured_bps > 0 else self._held_bps[index]

    def want(self, index: int, now: float) -> None:
        """A consumer targets encoding `index`: resume it at once if it is paused."""
        self._unwanted_since[index] = None
        if not self.active[index]:
            self.active[index] = True
            self._resumed_at[index] = now
            self._on_change(tuple(self.active))

    def update(self, wanted: Collection[int], measured_bps: Sequence[float], now: float) -> None:
        """Once per report interval: resume the wanted encodings, pause those nobody wanted for PAUSE_HOLD.

        `measured_bps` is each encoding's bitrate over the last interval.
        """
        changed = False
        for index in range(1, len(self.active)):
            measured, mean = measured_bps[index], self._mean_bps[index]
            if measured <= 0 or self._last_bps[index] <= 0:
                # Not sent, or sent again from within the interval (a partial figure): a new mean starts after.
                self._mean_bps[index] = 0.0
            else:
                self._mean_bps[index] = measured if mean <= 0 else mean + MEAN_WEIGHT * (measured - mean)
            self._last_bps[index] = measured
            if index in wanted:
                self._unwanted_since[index] = None
                if not self.active[index]:
                    self.active[index] = True
                    self._resumed_at[index] = now
                    changed = True
            elif self.active[index]:
                since = self._unwanted_since[index]
                if since is None:
                    self._unwanted_since[index] = now
                elif now - since >= PAUSE_HOLD:
                    self.active[index] = False
                    self.pauses[index] += 1
                    self._held_bps[index] = self._mean_bps[index] or measured
                    self._resumed_at[index] = None
                    changed = True
            resumed = self._resumed_at[index]
            if resumed is not None and (measured_bps[index] > 0 or now - resumed >= RESUME_GRACE):
                self._held_bps[index] = 0.0
                self._resumed_at[index] = None
        if changed:
            self._on_change(tuple(self.active))
