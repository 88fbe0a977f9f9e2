"""SendHistory: the send side of transport-wide congestion control.

It hands out the transport-wide sequence of every packet a transport sends and remembers when it went and how
big it was, in a preallocated ring indexed by sequence & 0xFFFF (no allocation per packet). Transport feedback
from the receiver is matched against it and comes out as PacketResults for the estimator.
"""

from __future__ import annotations

from typing import NamedTuple

from .transport_feedback import REFERENCE_MODULO, TICKS_PER_REFERENCE, TICKS_PER_SECOND, TransportFeedback

RING_SIZE = 0x10000  # one slot per 16-bit sequence
NEVER = float("-inf")  # the send time of a slot no packet used yet
# Feedback about a packet sent longer ago than this is ignored: its slot may hold a packet from a later lap of
# the sequence (65536 packets), and an estimate from packets that old says nothing about the link now.
MAX_FEEDBACK_AGE = 5.0
# Probe packets remembered at most (a cluster is a few dozen packets; older entries are dropped first).
PROBES_KEPT = 1000
# What is known of a slot: nothing yet, reported lost, reported received (a received report is final).
_UNREPORTED = 0
_LOST = 1
_RECEIVED = 2
_HALF_REFERENCE = REFERENCE_MODULO // 2


class PacketResult(NamedTuple):
    """One packet the feedback reported: when it was sent (sender's clock), when it arrived (receiver's clock,
    seconds, None when reported lost), its size in bytes and its probe cluster (-1 for none)."""

    send_time: float
    arrival: float | None
    size: int
    cluster: int


class SendHistory:
    """The transport-wide sequence counter and the send time and size of the last 65536 packets."""

    __slots__ = ("sequence", "sent", "sizes", "unknown", "_state", "_probes", "_reference")

    def __init__(self) -> None:
        self.sequence = 0  # the next packet's transport-wide sequence
        self.sent = [NEVER] * RING_SIZE
        self.sizes = [0] * RING_SIZE
        self.unknown = 0  # feedback entries about no packet we remember (never sent, or too old)
        self._state = bytearray(RING_SIZE)
        self._probes: dict[int, tuple[int, float]] = {}  # sequence -> (cluster, send time)
        self._reference: int | None = None  # the last feedback's reference time, unwrapped

    def add(self, size: int, now: float) -> int:
        """Take the next transport-wide sequence for a packet of `size` bytes sent at `now`."""
        sequence = self.sequence
        self.sequence = (sequence + 1) & 0xFFFF
        self.sent[sequence] = now
        self.sizes[sequence] = size
        self._state[sequence] = _UNREPORTED
        return sequence

    def add_probe(self, size: int, now: float, cluster: int) -> int:
        """add() for a packet of probe cluster `cluster`."""
        sequence = self.add(size, now)
        probes = self._probes
        if len(probes) >= PROBES_KEPT:
            del probes[next(iter(probes))]
        probes[sequence] = (cluster, now)
        return sequence

    def on_feedback(self, feedback: TransportFeedback, now: float) -> list[PacketResult]:
        """The packets `feedback` reports for the first time (a packet reported lost may later be reported
        received), in sequence order. Arrival times share one timeline across feedback packets."""
        reference = feedback.reference_time
        if self._reference is None:
            unwrapped = reference
        else:
            last = self._reference
            unwrapped = last + ((reference - last + _HALF_REFERENCE) % REFERENCE_MODULO) - _HALF_REFERENCE
        self._reference = unwrapped
        offset = (unwrapped - reference) * TICKS_PER_REFERENCE
        oldest = now - MAX_FEEDBACK_AGE
        sent, sizes, state, probes = self.sent, self.sizes, self._state, self._probes
        results: list[PacketResult] = []
        base = feedback.base_sequence
        for index, arrival in enumerate(feedback.arrivals):
            sequence = (base + index) & 0xFFFF
            send_time = sent[sequence]
            if send_time < oldest or send_time > now:
                self.unknown += 1
                continue
            known = state[sequence]
            if known == _RECEIVED or (known == _LOST and arrival is None):
                continue
            probe = probes.get(sequence)
            cluster = probe[0] if probe is not None and probe[1] == send_time else -1
            if arrival is None:
                state[sequence] = _LOST
                results.append(PacketResult(send_time, None, sizes[sequence], cluster))
            else:
                state[sequence] = _RECEIVED
                seconds = (arrival + offset) / TICKS_PER_SECOND
                results.append(PacketResult(send_time, seconds, sizes[sequence], cluster))
        return results
