"""SendHistory: the send side of transport-wide congestion control.

It hands out the transport-wide sequence of every packet a transport sends and remembers when it went and how
big it was, in a ring indexed by sequence & mask (no allocation per packet). The ring starts small and doubles
before it would overwrite a packet younger than MAX_FEEDBACK_AGE, so it holds every packet feedback can still be
about, up to RING_SIZE: its memory grows with the transport's packet rate. Transport feedback from the receiver is
matched against it and comes out as PacketResults for the estimator.
"""

from __future__ import annotations

from array import array
from functools import partial
from typing import NamedTuple

from .transport_feedback import REFERENCE_MODULO, TICKS_PER_REFERENCE, TICKS_PER_SECOND, TransportFeedback

# At most the last 4096 packets are remembered: 2 s (MAX_FEEDBACK_AGE) at 2048 packets a second towards one
# peer (~20 Mb/s); feedback comes every 100 ms. Feedback about older packets is counted as unknown.
RING_SIZE = 0x1000
# A new transport's ring: 128 slots (2 s of up to 48 packets a second). A slot costs ~60 bytes: the send time
# (a list item; the float is the received packet's, shared by its fan-out), the size (a list item and its int:
# lists are the fastest to store into per packet) and the send times reported received / lost (typed arrays,
# used per feedback only); 2 s of ~500 packets a second (a 550 kbit/s video and its audio) take 1024, ~60 KB.
FIRST_RING_SIZE = 0x80
# The ring's room is checked once per run of 32 slots, when a packet takes the first slot of a run (its index
# is a multiple of 32): it doubles if the newest packet in the run is younger than MAX_FEEDBACK_AGE, so no
# packet that young is overwritten, for one test of the slot index per packet.
ROOM_CHECK = 32
ROOM_CHECK_MASK = ROOM_CHECK - 1
NEVER = float("-inf")  # the send time of a slot no packet used yet
# Feedback about a packet sent longer ago than this is ignored: an estimate from packets that old says nothing
# about the link now. The ring grows rather than forget a packet younger than this.
MAX_FEEDBACK_AGE = 2.0
# Probe packets remembered at most (a cluster is a few dozen packets; older entries are dropped first).
PROBES_KEPT = 1000
_HALF_REFERENCE = REFERENCE_MODULO // 2


def _times(size: int) -> array:
    """A ring of `size` send times, each NEVER."""
    return array("d", (NEVER,)) * size


class PacketResult(NamedTuple):
    """One packet the feedback reported: when it was sent (sender's clock), when it arrived (receiver's clock,
    seconds, None when reported lost), its size in bytes and its probe cluster (-1 for none)."""

    send_time: float
    arrival: float | None
    size: int
    cluster: int


# PacketResult from a tuple of its fields, without the Python-level __new__ (once per reported packet).
_result = partial(tuple.__new__, PacketResult)


class SendHistory:
    """The transport-wide sequence counter and the send time and size of the packets of the last
    MAX_FEEDBACK_AGE (in FIRST_RING_SIZE to RING_SIZE slots)."""

    __slots__ = ("sequence", "mask", "sent", "sizes", "unknown", "_received", "_lost", "_probes", "_reference")

    def __init__(self) -> None:
        self.sequence = 0  # the next packet's transport-wide sequence
        self.mask = FIRST_RING_SIZE - 1  # sequence & mask is a packet's slot
        self.sent = [NEVER] * FIRST_RING_SIZE
        self.sizes = [0] * FIRST_RING_SIZE
        self.unknown = 0  # feedback entries about no packet we remember (never sent, or too old)
        # The send time of the packet in each slot when feedback reported it received / lost: a slot's report
        # is known by comparing it with the slot's send time, so taking a slot needs no reset.
        self._received = _times(FIRST_RING_SIZE)
        self._lost = _times(FIRST_RING_SIZE)
        self._probes: dict[int, tuple[int, float]] = {}  # sequence -> (cluster, send time)
        self._reference: int | None = None  # the last feedback's reference time, unwrapped

    def add(self, size: int, now: float) -> int:
        """Take the next transport-wide sequence for a packet of `size` bytes sent at `now` (Consumer.forward
        does the same inline)."""
        sequence = self.sequence
        self.sequence = (sequence + 1) & 0xFFFF
        slot = sequence & self.mask
        if not slot & ROOM_CHECK_MASK:
            slot = self.make_room(sequence, now)
        self.sent[slot] = now
        self.sizes[slot] = size
        return sequence

    def make_room(self, sequence: int, now: float) -> int:
        """The slot of `sequence`, the first of a run of ROOM_CHECK slots, after doubling the ring (up to RING_SIZE)
        if the run holds a packet younger than MAX_FEEDBACK_AGE (each remembered packet moves to its slot in the
        larger ring)."""
        size = self.mask + 1
        slot = sequence & self.mask
        if size >= RING_SIZE or self.sent[slot + ROOM_CHECK_MASK] <= now - MAX_FEEDBACK_AGE:
            return slot
        mask = size * 2 - 1
        # Old slots [split, size) hold the packets of the lap before those in [0, split); in the larger ring each
        # of the two runs stays contiguous.
        split = sequence & (size - 1)
        older, newer = (sequence - split - size) & mask, (sequence - split) & mask
        for name, new in (("sent", [NEVER] * (mask + 1)), ("sizes", [0] * (mask + 1)),
                          ("_received", _times(mask + 1)), ("_lost", _times(mask + 1))):
            old = getattr(self, name)
            new[older + split:older + size] = old[split:]
            new[newer:newer + split] = old[:split]
            setattr(self, name, new)
        self.mask = mask
        return sequence & mask

    def add_probe(self, size: int, now: float, cluster: int) -> int:
        """add() for a packet of probe cluster `cluster`."""
        sequence = self.add(size, now)
        probes = self._probes
        if len(probes) >= PROBES_KEPT:
            del probes[next(iter(probes))]
        probes[sequence] = (cluster, now)
        return sequence

    def join_cluster(self, first: int, stop: int, cluster: int) -> None:
        """Count the packets sent with sequences `first` up to `stop` (excluded; media between two probe packets of
        `cluster`) in that cluster: a probe measures what the path took while it ran, media included."""
        probes, sent, mask = self._probes, self.sent, self.mask
        sequence = first & 0xFFFF
        while sequence != stop & 0xFFFF:
            if len(probes) >= PROBES_KEPT:
                del probes[next(iter(probes))]
            probes[sequence] = (cluster, sent[sequence & mask])
            sequence = (sequence + 1) & 0xFFFF

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
        # Only the entries about the packets the ring holds are looked at (whatever the packet claims)
        newest = (self.sequence - 1 - base) & 0xFFFF  # the index of the last packet sent, if the report reached it
        mask = self.mask
        first, stop = max(0, newest - mask), min(len(arrivals), newest + 1)
        self.unknown += len(arrivals) - max(0, stop - first)
        for index in range(first, stop):
            arrival = arrivals[index]
            sequence = (base + index) & 0xFFFF
            slot = sequence & mask
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
                results.append(_result((send_time, None, sizes[slot], cluster)))
            else:
                received[slot] = send_time
                seconds = (arrival + offset) / TICKS_PER_SECOND
                results.append(_result((send_time, seconds, sizes[slot], cluster)))
        return results
