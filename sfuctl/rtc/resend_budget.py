"""ResendBudget: how much a NACK may make us retransmit, so that feedback never costs more than a fixed multiple
of the media (mediasoup's RtpStreamSend rules, written from their description).

- A packet is resent at most once per RTT (100 ms until an RTT is known, never less than one NACK tick): a second
  NACK for it within that window asks for a copy that is still on its way.
- Retransmitted bytes over each second are capped at RESEND_RATIO times the media bytes of the previous second,
  and over the whole run at RESEND_RATIO times the media sent.
- A sequence number the owner no longer holds costs a lookup and nothing more (the owner's `lookup` says so).

Time is a parameter (deterministic tests); nothing here runs per media packet, only per NACKed sequence number.
"""

from __future__ import annotations

from collections.abc import Callable

# Retransmitted bytes allowed per second, as a multiple of the media bytes sent in the previous second: room for
# repairing heavy loss (up to 60% of a burst resent once) while a NACK storm costs at most 1.5x the media.
RESEND_RATIO = 1.5
# The window over which the byte cap is counted (seconds).
BUDGET_WINDOW = 1.0
# Until the peer's reports give an RTT, a packet is not resent twice within this many seconds (a typical RTT).
DEFAULT_RTT = 0.1
# Nor ever within one NACK tick (batching.TICK_INTERVAL): on loopback the RTT is well under a millisecond.
MIN_RESEND_INTERVAL = 0.02
# Resend times remembered (sequence numbers); a retransmission buffer holds 1024 packets.
REMEMBERED = 1024


class ResendBudget:
    """Decides, per NACKed sequence number, whether to resend; counts what it refused and why."""

    __slots__ = (
        "_media_bytes", "_resent_at", "_window_start", "_window_media", "_allowance", "_spent", "_total",
        "refused_recent", "refused_budget",
    )

    def __init__(self, media_bytes: Callable[[], int] | None, now: float) -> None:
        """`media_bytes()` is the stream's media bytes sent so far (retransmissions excluded, none yet at `now`);
        None: no byte cap."""
        self._media_bytes = media_bytes
        self._resent_at: dict[int, float] = {}
        self._window_start = now
        self._window_media = 0
        self._allowance: float | None = None  # None during the first window
        self._spent = 0
        self._total = 0
        self.refused_recent = 0  # resent less than an RTT ago
        self.refused_budget = 0  # over the byte cap

    @property
    def refused(self) -> int:
        return self.refused_recent + self.refused_budget

    def allow(self, sequence: int, now: float, rtt: float | None) -> bool:
        """Whether `sequence` may be resent now (before its size is known); False counts a refusal."""
        if now - self._window_start >= BUDGET_WINDOW:
            self._new_window(now)
        resent = self._resent_at.get(sequence)
        if resent is not None and now - resent < max(MIN_RESEND_INTERVAL, DEFAULT_RTT if rtt is None else rtt):
            self.refused_recent += 1
            return False
        media_bytes = self._media_bytes
        if media_bytes is not None:
            # The window's cap (none in the stream's first window), and over the whole run RESEND_RATIO x the media.
            over_window = self._allowance is not None and self._spent >= self._allowance
            if over_window or self._total >= RESEND_RATIO * media_bytes():
                self.refused_budget += 1
                return False
        return True

    def spend(self, sequence: int, size: int, now: float) -> None:
        """Record that `sequence` (`size` bytes) was resent."""
        self._spent += size
        self._total += size
        resent_at = self._resent_at
        resent_at.pop(sequence, None)
        resent_at[sequence] = now  # insertion order = resend order
        if len(resent_at) > REMEMBERED:
            del resent_at[next(iter(resent_at))]

    def _new_window(self, now: float) -> None:
        if self._media_bytes is None:
            self._window_start = now
            return
        media = self._media_bytes()
        elapsed = now - self._window_start
        # The previous window's media rate, over a full window (a window with no NACK may have lasted longer).
        self._allowance = RESEND_RATIO * (media - self._window_media) * BUDGET_WINDOW / elapsed
        self._window_start = now
        self._window_media = media
        self._spent = 0
