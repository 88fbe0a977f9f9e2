"""The delay-based half of Google Congestion Control (draft-ietf-rmcat-gcc-02, as libwebrtc's goog_cc does it):
packets are grouped into bursts by send time, the variation of the delay between groups is smoothed and its
trend over the last groups compared with an adaptive threshold (over-use detector), and an AIMD controller turns
the verdict into a bitrate. Times are seconds on the caller's clocks; every class takes them as parameters.
"""

from __future__ import annotations

import math
from collections import deque

# Packets sent within this span of a group's first packet belong to the group (a frame's packets, a burst).
GROUP_SPAN = 0.005
# A packet that arrives within this time of its group's last arrival, earlier than its send time would have
# it (a burst released by the network at once), joins the group too, as long as the group spans under
# BURST_MAX_SPAN of arrivals.
BURST_ARRIVAL_GAP = 0.005
BURST_MAX_SPAN = 0.1
# Trendline: the slope over this many groups of the smoothed accumulated delay (libwebrtc's defaults).
TRENDLINE_WINDOW = 20
TRENDLINE_SMOOTHING = 0.9
TRENDLINE_MIN_SAMPLES = 3
# An x spread under this fraction of the squared x offsets from the anchor is rounding: every x is the same.
SLOPE_ROUNDING = 1e-12
# The slope is scaled by min(groups, 60) and this gain before it is compared with the threshold.
TRENDLINE_GAIN = 4.0
TRENDLINE_MAX_GROUPS = 60
# The adaptive threshold (ms): starts at 12.5, follows |trend| upwards with gain K_UP and downwards with
# K_DOWN per ms, within 6..600; a trend more than 15 above it is an outlier that does not move it.
THRESHOLD_INITIAL = 12.5
THRESHOLD_MIN = 6.0
THRESHOLD_MAX = 600.0
THRESHOLD_K_UP = 0.0087
THRESHOLD_K_DOWN = 0.039
THRESHOLD_OUTLIER = 15.0
# Over-use is signalled once the trend has stayed above the threshold this long (and for two groups).
OVERUSE_TIME = 0.010

NORMAL = "normal"
OVERUSING = "overusing"
UNDERUSING = "underusing"

# AIMD: on over-use the rate drops to BETA times what the receiver got; otherwise it grows by 8% per second,
# or, once a link capacity is known and the rate is near it, by about one packet per response time.
BETA = 0.85
MULTIPLICATIVE_INCREASE = 1.08
MIN_INCREASE_BPS = 1000.0
# The additive increase: a 30 fps frame's packets of at most 1200 bytes, one more per RTT + 100 ms, >= 4 kb/s.
ADDITIVE_FRAME_RATE = 30.0
ADDITIVE_PACKET_BITS = 1200 * 8
ADDITIVE_RESPONSE_EXTRA = 0.1
ADDITIVE_MIN_BPS = 4000.0
# The rate never grows past this multiple of what the receiver got (plus 10 kb/s): the estimate must stay
# anchored to evidence while the sender does not use it all.
ACKED_HEADROOM = 1.5
ACKED_HEADROOM_BPS = 10_000.0
# Link capacity: a running average of what arrived at each over-use (weight 0.05) and its normalized variance;
# a rate within 3 deviations of it grows additively.
CAPACITY_SMOOTHING = 0.05
CAPACITY_DEVIATIONS = 3.0
CAPACITY_VARIANCE_MIN = 0.4
CAPACITY_VARIANCE_MAX = 2.5
# Decreases come at most once per RTT, clamped to 10..200 ms, unless the rate is twice what arrives.
DECREASE_INTERVAL_MIN = 0.010
DECREASE_INTERVAL_MAX = 0.2


class InterArrival:
    """Groups packets by send time and yields, per completed group, (send delta, arrival delta, arrival)."""

    __slots__ = ("_first_send", "_last_send", "_first_arrival", "_last_arrival", "_previous")

    def __init__(self) -> None:
        self._first_send: float | None = None
        self._last_send = 0.0
        self._first_arrival = 0.0
        self._last_arrival = 0.0
        self._previous: tuple[float, float] | None = None  # (last send, last arrival) of the previous group

    def add(self, send_time: float, arrival: float) -> tuple[float, float, float] | None:
        """Feed one received packet (in feedback order); returns the deltas when it completes a group."""
        if self._first_send is None:
            self._start(send_time, arrival)
            return None
        if send_time < self._first_send:
            return None  # reordered behind its group: no information about the current queue
        result = None
        if self._new_group(send_time, arrival):
            if self._previous is not None:
                send_delta = self._last_send - self._previous[0]
                arrival_delta = self._last_arrival - self._previous[1]
                if arrival_delta >= 0:
                    result = (send_delta, arrival_delta, self._last_arrival)
            self._previous = (self._last_send, self._last_arrival)
            self._start(send_time, arrival)
            return result
        self._last_send = max(self._last_send, send_time)
        self._last_arrival = arrival
        return None

    def _start(self, send_time: float, arrival: float) -> None:
        self._first_send = self._last_send = send_time
        self._first_arrival = self._last_arrival = arrival

    def _new_group(self, send_time: float, arrival: float) -> bool:
        arrival_delta = arrival - self._last_arrival
        send_delta = send_time - self._last_send
        if send_delta == 0:
            return False
        if (
            arrival_delta - send_delta < 0
            and arrival_delta <= BURST_ARRIVAL_GAP
            and arrival - self._first_arrival < BURST_MAX_SPAN
        ):
            return False
        return send_time - self._first_send > GROUP_SPAN


class TrendlineDetector:
    """The trend of the inter-group delay variation against an adaptive threshold -> normal/over/under-use."""

    __slots__ = (
        "state",
        "trend",
        "threshold",
        "_accumulated",
        "_smoothed",
        "_first_arrival",
        "_points",
        "_groups",
        "_overuse_time",
        "_overuse_count",
        "_previous_trend",
        "_last_update",
    )

    def __init__(self) -> None:
        self.state = NORMAL
        self.trend = 0.0  # the last modified trend (ms)
        self.threshold = THRESHOLD_INITIAL
        self._accumulated = 0.0
        self._smoothed = 0.0
        self._first_arrival: float | None = None
        self._points = SlidingSlope(TRENDLINE_WINDOW)
        self._groups = 0
        self._overuse_time = -1.0
        self._overuse_count = 0
        self._previous_trend = 0.0
        self._last_update: float | None = None

    def update(self, send_delta: float, arrival_delta: float, arrival: float) -> str:
        """One group's deltas (seconds); returns the detector's state."""
        variation_ms = (arrival_delta - send_delta) * 1000.0
        self._groups += 1
        self._accumulated += variation_ms
        self._smoothed = TRENDLINE_SMOOTHING * self._smoothed + (1 - TRENDLINE_SMOOTHING) * self._accumulated
        if self._first_arrival is None:
            self._first_arrival = arrival
        self._points.add((arrival - self._first_arrival) * 1000.0, self._smoothed)
        # The slope from the first groups on (libwebrtc waits for a full window): a queue that the first
        # probes filled is seen while it fills, not only once it stands still at its limit.
        slope = self._points.slope(self._previous_trend) if len(self._points) >= TRENDLINE_MIN_SAMPLES else 0.0
        self._detect(slope, send_delta * 1000.0, arrival)
        self._previous_trend = slope
        return self.state

    def _detect(self, slope: float, send_delta_ms: float, now: float) -> None:
        if self._groups < 2:
            return
        trend = min(self._groups, TRENDLINE_MAX_GROUPS) * slope * TRENDLINE_GAIN
        self.trend = trend
        if trend > self.threshold:
            if self._overuse_time < 0:
                self._overuse_time = send_delta_ms / 2  # the group straddles the start of the over-use
            else:
                self._overuse_time += send_delta_ms
            self._overuse_count += 1
            if (
                self._overuse_time > OVERUSE_TIME * 1000
                and self._overuse_count > 1
                and slope >= self._previous_trend
            ):
                self._overuse_time = 0.0
                self._overuse_count = 0
                self.state = OVERUSING
        elif trend < -self.threshold:
            self._overuse_time = -1.0
            self._overuse_count = 0
            self.state = UNDERUSING
        else:
            self._overuse_time = -1.0
            self._overuse_count = 0
            self.state = NORMAL
        self._adapt_threshold(trend, now)

    def _adapt_threshold(self, trend: float, now: float) -> None:
        if self._last_update is None:
            self._last_update = now
        magnitude = abs(trend)
        if magnitude > self.threshold + THRESHOLD_OUTLIER:
            self._last_update = now
            return
        gain = THRESHOLD_K_DOWN if magnitude < self.threshold else THRESHOLD_K_UP
        elapsed_ms = min((now - self._last_update) * 1000.0, 100.0)
        self.threshold += gain * (magnitude - self.threshold) * elapsed_ms
        self.threshold = min(max(self.threshold, THRESHOLD_MIN), THRESHOLD_MAX)
        self._last_update = now


class SlidingSlope:
    """The least-squares slope of the last `size` (x, y) points, in constant time per point: running sums of the
    points taken about an anchor point, which moves to the oldest point every `size` points (the sums are then
    taken again), so that they stay small and lose no precision however large x and y grow."""

    __slots__ = ("_points", "_anchor", "_since_anchor", "_sx", "_sy", "_sxy", "_sxx")

    def __init__(self, size: int) -> None:
        self._points: deque[tuple[float, float]] = deque(maxlen=size)
        self._anchor = (0.0, 0.0)
        self._since_anchor = 0
        self._sx = self._sy = self._sxy = self._sxx = 0.0

    def __len__(self) -> int:
        return len(self._points)

    def add(self, x: float, y: float) -> None:
        """Add a point, dropping the oldest beyond `size`."""
        points = self._points
        if not points:
            self._anchor = (x, y)
        ax, ay = self._anchor
        if len(points) == points.maxlen:
            ox, oy = points[0]
            ox -= ax
            oy -= ay
            self._sx -= ox
            self._sy -= oy
            self._sxy -= ox * oy
            self._sxx -= ox * ox
        points.append((x, y))
        self._since_anchor += 1
        if self._since_anchor >= points.maxlen:  # type: ignore[operator]
            self._reanchor()
            return
        x -= ax
        y -= ay
        self._sx += x
        self._sy += y
        self._sxy += x * y
        self._sxx += x * x

    def slope(self, fallback: float) -> float:
        """The slope, or `fallback` when every x is the same (their spread is within the sums' rounding)."""
        count = len(self._points)
        denominator = self._sxx - self._sx * self._sx / count
        if denominator <= SLOPE_ROUNDING * self._sxx:
            return fallback
        return (self._sxy - self._sx * self._sy / count) / denominator

    def _reanchor(self) -> None:
        ax, ay = self._anchor = self._points[0]
        self._since_anchor = 0
        sx = sy = sxy = sxx = 0.0
        for x, y in self._points:
            x -= ax
            y -= ay
            sx += x
            sy += y
            sxy += x * y
            sxx += x * x
        self._sx, self._sy, self._sxy, self._sxx = sx, sy, sxy, sxx


class AimdRateControl:
    """Additive-increase multiplicative-decrease of the delay-based rate, driven by the detector's state."""

    __slots__ = ("bitrate_bps", "rtt", "_state", "_last_change", "_last_decrease", "_capacity", "_variance")

    def __init__(self, start_bps: float) -> None:
        self.bitrate_bps = start_bps
        self.rtt = 0.2  # seconds; libwebrtc's default until one is measured
        self._state = "hold"
        self._last_change: float | None = None
        self._last_decrease: float | None = None
        self._capacity: float | None = None  # kb/s
        self._variance = CAPACITY_VARIANCE_MIN

    def set_estimate(self, bitrate_bps: float, now: float) -> None:
        """Take an estimate from elsewhere (a probe's result)."""
        self.bitrate_bps = bitrate_bps
        self._last_change = now

    def time_to_reduce(self, acked_bps: float | None, now: float) -> bool:
        """Whether an over-use should lower the rate again now."""
        if self._last_decrease is None:
            return True
        interval = min(max(self.rtt, DECREASE_INTERVAL_MIN), DECREASE_INTERVAL_MAX)
        if now - self._last_decrease >= interval:
            return True
        return acked_bps is not None and self.bitrate_bps / 2 > acked_bps

    def update(self, state: str, acked_bps: float | None, now: float) -> float:
        """Apply the detector's state at `now`; returns the new rate."""
        if state == OVERUSING:
            if self._state != "decrease":
                self._state = "decrease"
        elif state == UNDERUSING:
            self._state = "hold"
        elif self._state == "hold" or self._state == "decrease":
            self._state = "increase"
        if self._last_change is None:
            self._last_change = now
        if self._state == "increase":
            self._increase(acked_bps, now)
        elif self._state == "decrease":
            self._decrease(acked_bps, now)
        self._last_change = now
        return self.bitrate_bps

    def _increase(self, acked_bps: float | None, now: float) -> None:
        if acked_bps is not None and self._capacity is not None:
            upper = self._capacity + CAPACITY_DEVIATIONS * math.sqrt(self._variance * self._capacity)
            if acked_bps / 1000 > upper:
                self._capacity = None  # the link got faster: back to multiplicative increase
        elapsed = min(now - (self._last_change or now), 1.0)
        rate = self.bitrate_bps
        if self._capacity is not None:
            response = self.rtt + ADDITIVE_RESPONSE_EXTRA
            frame_bits = rate / ADDITIVE_FRAME_RATE
            packets = max(1, math.ceil(frame_bits / ADDITIVE_PACKET_BITS))
            increase = max(ADDITIVE_MIN_BPS, frame_bits / packets / response) * elapsed
        else:
            increase = max(rate * (MULTIPLICATIVE_INCREASE**elapsed - 1), MIN_INCREASE_BPS * elapsed)
        raised = rate + increase
        if acked_bps is not None:
            cap = ACKED_HEADROOM * acked_bps + ACKED_HEADROOM_BPS
            raised = max(min(raised, cap), min(rate, raised))
        self.bitrate_bps = raised

    def _decrease(self, acked_bps: float | None, now: float) -> None:
        if acked_bps is not None:
            lowered = BETA * acked_bps
            if lowered > self.bitrate_bps and self._capacity is not None:
                lowered = BETA * self._capacity * 1000
            self.bitrate_bps = min(self.bitrate_bps, lowered)
            sample = acked_bps / 1000
            if self._capacity is not None:
                lower = self._capacity - CAPACITY_DEVIATIONS * math.sqrt(self._variance * self._capacity)
                if sample < lower:
                    self._capacity = None  # the link got slower: start the average again
            self._add_capacity_sample(sample)
        self._last_decrease = now
        self._state = "hold"

    def _add_capacity_sample(self, kbps: float) -> None:
        if self._capacity is None:
            self._capacity = kbps
            return
        alpha = CAPACITY_SMOOTHING
        self._capacity = (1 - alpha) * self._capacity + alpha * kbps
        error = self._capacity - kbps
        variance = (1 - alpha) * self._variance + alpha * error * error / max(self._capacity, 1.0)
        self._variance = min(max(variance, CAPACITY_VARIANCE_MIN), CAPACITY_VARIANCE_MAX)
