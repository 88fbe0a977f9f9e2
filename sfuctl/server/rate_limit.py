"""TokenBucket: a rate limit with a burst allowance on a clock the caller passes in (signaling, data messages)."""

from __future__ import annotations


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; `take` spends one. A rate of 0 disables the limit."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate < 0 or burst < 1:
            raise ValueError("a token bucket needs rate >= 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._updated = now

    def take(self, now: float) -> bool:
        """Spend a token if one is left at `now`; False means over the limit."""
        if not self.rate:
            return True
        tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if tokens < 1:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1
        return True
