"""Quality of a stream: loss over the last report intervals and a 0-10 score, after mediasoup's RtpStream.

Runs once per report interval, never per packet; takes counters, not clocks, so its tests are deterministic.
"""

from __future__ import annotations

import math
from collections import deque

from ..stats_schema import MAX_SCORE

# Loss is averaged over this many report intervals (receiver reports for consumers, the server's own 1-s
# reports for producers): a single ~1-s interval of 50 audio packets moves in steps of 2 percentage points.
LOSS_INTERVALS = 5
SCORE_HISTORY = 8


def interval_score(packets: int, lost: int, repaired: int = 0) -> int:
    """Score 0-10 of one interval, after mediasoup's RtpStream scores.

    `packets` were sent (or received) in the interval, `lost` of them never arrived, `repaired` were lost and
    recovered by a NACK retransmission. The delivered share is raised to the 4th power, so 1% loss still scores
    10, 5% scores 8 and 20% scores 4. A repaired packet is partly forgiven: the more repairs in the interval,
    the less each is forgiven ((1 / (1 + repaired share))^4). Retransmissions reuse the media SSRC here, so a
    receiver counts a repaired packet as received and `lost` holds only what stayed lost.
    """
    if packets <= 0:
        raise ValueError(f"an interval score needs packets > 0, got {packets}")
    lost = min(max(lost, 0), packets)
    repaired = max(repaired, 0)
    forgiven = (1.0 / (1.0 + repaired / packets)) ** 4
    effective_lost = min(packets, lost + repaired * (1.0 - forgiven))
    delivered = (packets - effective_lost) / packets
    return _round_half_up(delivered**4 * MAX_SCORE)


class ScoreHistory:
    """The reported score: a weighted average of the last interval scores, the newest weighing the most."""

    def __init__(self, initial: int = MAX_SCORE, length: int = SCORE_HISTORY) -> None:
        self._scores: deque[int] = deque(maxlen=length)
        self.value = initial

    def add(self, score: int) -> int:
        self._scores.append(score)
        weights = range(1, len(self._scores) + 1)
        total = sum(w * s for w, s in zip(weights, self._scores))
        self.value = _round_half_up(total / sum(weights))
        return self.value

    def reset(self, score: int) -> None:
        """Forget the history (the stream stopped or came back)."""
        self._scores.clear()
        self.value = score


class LossWindow:
    """Loss over the last few report intervals, from cumulative 'expected' and 'lost' counters (RFC 3550 6.4.1)."""

    def __init__(self, intervals: int = LOSS_INTERVALS) -> None:
        self._points: deque[tuple[int, int]] = deque(maxlen=intervals + 1)

    def add(self, expected: int, lost: int) -> None:
        self._points.append((expected, lost))

    @property
    def fraction(self) -> float | None:
        """Lost / expected between the oldest and newest point, 0..1; None before two points."""
        if len(self._points) < 2:
            return None
        (expected0, lost0), (expected1, lost1) = self._points[0], self._points[-1]
        expected = expected1 - expected0
        if expected <= 0:
            return 0.0
        return min(1.0, max(0.0, (lost1 - lost0) / expected))


class QualityMonitor:
    """Loss fraction and score of one stream, fed cumulative counters once per report interval.

    `idle_score` is the score of an interval without packets: 10 for a stream the server sends (nothing sent,
    nothing to blame, as in mediasoup) and 0 for one it receives (the publisher went silent).
    """

    def __init__(self, idle_score: int) -> None:
        self.idle_score = idle_score
        self.history = ScoreHistory()
        self.loss = LossWindow()
        self.fraction_lost = 0.0
        self._prior: tuple[int, int, int] | None = None  # packets, lost, repaired at the previous update
        self._idle = False

    @property
    def score(self) -> int:
        return self.history.value

    def update(self, *, packets: int, expected: int, lost: int, repaired: int = 0, reported_fraction: float | None = None) -> None:
        """Close an interval: `packets` handled so far, `expected`/`lost` as a receiver counts them, `repaired`.

        `reported_fraction` (a receiver report's own fraction) stands in until the window holds two points.
        """
        self.loss.add(expected, lost)
        window = self.loss.fraction
        self.fraction_lost = window if window is not None else (reported_fraction or 0.0)
        prior, self._prior = self._prior, (packets, lost, repaired)
        if prior is None:
            return
        packets_delta = packets - prior[0]
        if packets_delta <= 0:
            if self.idle_score == 0:
                self.history.reset(0)
                self._idle = True
            else:
                self.history.add(self.idle_score)
            return
        if self._idle:
            self.history.reset(MAX_SCORE)
            self._idle = False
        self.history.add(interval_score(packets_delta, lost - prior[1], repaired - prior[2]))


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


