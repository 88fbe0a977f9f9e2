"""SendHistory: the send side of transport-wide congestion control.

It hands out the transport-wide sequence of every packet a transport sends and remembers when it went and how
big it was, in a preallocated ring indexed by sequence & RING_MASK (no allocation per packet). Transport
feedback from the receiver is matched against it and comes out as PacketResults for the estimator.
"""

from __future__ import annotations

from typing import NamedTuple

from .transport_feedback import REFERENCE_MODULO, TICKS_PER_REFERENCE, TICKS_PER_SECOND, TransportFeedback

# The last 4096 packets are remembered: feedback comes every 100 ms, so that is over 4 s of history at 1000
# packets a second towards one peer (~10 Mb/s), in 3 lists of 32 KB per transport (a slot per 16-bit sequence
# would take 1.5 MB per subscriber). Feedback about older packets is counted as unknown.
RING_SIZE = 0x1000
RING_MASK = RING_SIZE - 1
NEVER = float("-inf")  # the send time of a slot no packet used yet
# Feedback about a packet sent longer ago than this is ignored: an estimate from packets that old says nothing
# about the link now.
MAX_FEEDBACK_AGE = 2.0
# Probe packets remembered at most (a cluster is a few dozen packets; older entries are dropped first).
PROBES_KEPT = 1000
_HALF_REFERENCE = REFERENCE_MODULO // 2


class PacketResult(NamedTuple):
    """One packet the feedback reported: when it was sent (sender's clock), when it arrived (receiver's clock,
    seconds, None when reported lost), its size in bytes and its probe cluster (-1 for none)."""

    send_time: float
    arrival: float | None
    size: int
    cluster: int


class SendHistory:
    """The transport-wide sequence counter and the send time and size of the last RING_SIZE packets."""

    __slots__ = ("sequence", "sent", "sizes", "unknown", "_received", "_lost", "_probes", "_reference")

    def __init__(self) -> None:
        self.sequence = 0  # the next packet's transport-wide sequence
        self.sent = [NEVER] * RING_SIZE
        self.sizes = [0] * RING_SIZE
        self.unknown = 0  # feedback entries about no packet we remember (never sent, or too old)
        # The send time of the packet in each slot when feedback reported it received / lost: a slot's report
        # is known by comparing it with the slot's send time, so taking a slot needs no reset (add stays 3 stores).
        self._received = [NEVER] * RING_SIZE
        self._lost = [NEVER] * RING_SIZE
        self._probes: dict[int, tuple[int, float]] = {}  # sequence -> (cluster, send time)
        self._reference: int | None = None  # the last feedback's reference time, unwrapped

    def add(self, size: int, now: float) -> int:
        """Take the next transport-wide sequence for a packet of `size` bytes sent at `now` (Consumer.forward
        does the same inline)."""
        sequence = self.sequence
        self.sequence = (sequence + 1) & 0xFFFF
        self.sent[sequence & RING_MASK] = now
        self.sizes[sequence & RING_MASK] = size
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
        sent, sizes, received, lost, probes = self.sent, self.sizes, self._received, self._lost, self._probes
        results: list[PacketResult] = []
        base = feedback.base_sequence
        arrivals = feedback.arrivals
        # Only the entries about the last RING_SIZE packets sent are looked at (whatever the packet claims)
        newest = (self.sequence - 1 - base) & 0xFFFF  # the index of the last packet sent, if the report reached it
        first, stop = max(0, newest - RING_MASK), min(len(arrivals), newest + 1)
        self.unknown += len(arrivals) - max(0, stop - first)
        for index in range(first, stop):
            arrival = arrivals[index]
            sequence = (base + index) & 0xFFFF
            slot = sequence & RING_MASK
            send_time = sent[slot]
            if send_time < oldest or send_time > now:
                self.unknown += 1
                continue
            if received[slot] == send_time or (arrival is None and lost[slot] == send_time):
                continue  # reported before (a packet reported lost may still be reported received)
            probe = probes.get(sequence)
            cluster = probe[0] if probe is not None and probe[1] == send_time else -1
            if arrival is None:
                lost[slot] = send_time
                results.append(PacketResult(send_time, None, sizes[slot], cluster))
            else:
                received[slot] = send_time
                seconds = (arrival + offset) / TICKS_PER_SECOND
                results.append(PacketResult(send_time, seconds, sizes[slot], cluster))
        return results
