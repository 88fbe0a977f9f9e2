"""Round-trip time of a transport from its own ICE traffic: binding request sent -> success response received.

The controlling agent sends connectivity checks and then a consent request every ~5 s (RFC 7675), and the
server answers at once, so each answered request is an RTT sample. A transaction sent more than once is
ambiguous and skipped (Karn's rule). Works at the datagram level; the ICE agent is untouched.
"""

from __future__ import annotations

MAX_PENDING = 64
PENDING_MAX_AGE = 30.0
SMOOTHING = 0.125  # RFC 6298 alpha


class StunRtt:
    """Smoothed RTT in ms (None until the first sample) of the binding requests seen going out."""

    __slots__ = ("rtt_ms", "last_ms", "samples", "_pending")

    def __init__(self) -> None:
        self.rtt_ms: float | None = None
        self.last_ms: float | None = None
        self.samples = 0
        self._pending: dict[bytes, float | None] = {}

    def on_send(self, data: bytes, now: float) -> None:
        """Feed every outgoing datagram whose first byte is < 2 (STUN)."""
        if len(data) < 20 or data[0] != 0x00 or data[1] != 0x01:  # binding request
            return
        tid = data[8:20]
        pending = self._pending
        if tid in pending:
            pending[tid] = None
            return
        if len(pending) >= MAX_PENDING:
            horizon = now - PENDING_MAX_AGE
            for key in [k for k, sent in pending.items() if sent is None or sent < horizon]:
                del pending[key]
            if len(pending) >= MAX_PENDING:
                del pending[next(iter(pending))]
        pending[tid] = now

    def on_receive(self, data: bytes, now: float) -> None:
        """Feed every incoming datagram whose first byte is < 2 (STUN)."""
        if len(data) < 20 or data[0] != 0x01 or data[1] != 0x01:  # binding success response
            return
        sent = self._pending.pop(data[8:20], None)
        if sent is None:
            return
        sample = (now - sent) * 1000.0
        self.samples += 1
        self.last_ms = sample
        self.rtt_ms = sample if self.rtt_ms is None else self.rtt_ms + SMOOTHING * (sample - self.rtt_ms)
