"""ArrivalRecorder: the receive side of transport-wide congestion control.

It records the transport-wide sequence and arrival time of every packet a transport receives (media,
retransmissions, padding) and turns them into transport feedback packets every FEEDBACK_INTERVAL, each
covering the sequences since the previous one. A packet that arrives after its sequence was reported lost moves
the next report back to it, as long as it is within HISTORY_SECONDS, so reordering is reported as it happened.
Time is a parameter (seconds, any monotonic clock); the server and the bots use the same unit.
"""

from __future__ import annotations

from .transport_feedback import (
    LARGE_DELTA_MAX,
    LARGE_DELTA_MIN,
    REFERENCE_MODULO,
    TICKS_PER_REFERENCE,
    TICKS_PER_SECOND,
    TransportFeedback,
)

# Feedback goes out this often (mediasoup and libwebrtc's receive-side proxy send every 100 ms): often enough
# for a delay-based estimator to see a queue build within a few frames, ~1% of a 300 kb/s link in RTCP.
FEEDBACK_INTERVAL = 0.1
# Arrivals are kept this long after being reported, so a late packet can still be reported (mediasoup: 500 ms).
HISTORY_SECONDS = 0.5
# Sequences per feedback packet: at most 2 bytes of delta and 2/7 of a chunk each, so under 1000 bytes.
STATUSES_PER_PACKET = 400
# Sequences reported per feedback round at most: a peer jumping its sequence far ahead cannot make a round
# cost more than this (20 000 packets/s at the interval above, far beyond any real transport).
STATUSES_PER_ROUND = 2000


class ArrivalRecorder:
    """(transport-wide sequence, arrival time) of each received packet -> transport feedback packets."""

    __slots__ = (
        "sender_ssrc",
        "media_ssrc",
        "packets",
        "late",
        "feedback_packets",
        "_arrivals",
        "_highest",
        "_window_start",
        "_history_start",
        "_next_feedback",
        "_count",
    )

    def __init__(self, sender_ssrc: int, media_ssrc: int = 0) -> None:
        self.sender_ssrc = sender_ssrc
        self.media_ssrc = media_ssrc  # a media SSRC of the transport, for the feedback's media SSRC field
        self.packets = 0  # packets recorded
        self.late = 0  # packets too late to report (beyond the history) or repeated
        self.feedback_packets = 0
        self._arrivals: dict[int, float] = {}  # unwrapped sequence -> arrival time
        self._highest = -1  # highest unwrapped sequence seen, -1 before the first
        self._window_start = 0  # first unwrapped sequence the next feedback reports
        self._history_start = 0  # arrivals below this are forgotten
        self._next_feedback = float("-inf")
        self._count = 0

    def record(self, sequence: int, arrival: float) -> None:
        """One received packet: its transport-wide sequence (16 bits) and when it arrived."""
        highest = self._highest
        if highest < 0:
            unwrapped = sequence
            self._window_start = self._history_start = sequence
        else:
            unwrapped = highest + ((sequence - highest + 0x8000) & 0xFFFF) - 0x8000
        arrivals = self._arrivals
        if unwrapped < self._history_start or unwrapped in arrivals:
            self.late += 1
            return
        self.packets += 1
        arrivals[unwrapped] = arrival
        if unwrapped > highest:
            self._highest = unwrapped
        elif unwrapped < self._window_start:
            self._window_start = unwrapped

    def feedback(self, now: float) -> list[bytes]:
        """The feedback packets due at `now`: none until FEEDBACK_INTERVAL has passed since the last round, or
        when nothing new arrived."""
        if now < self._next_feedback or self._highest < self._window_start:
            return []
        self._next_feedback = now + FEEDBACK_INTERVAL
        start = self._window_start
        if self._highest + 1 - start > STATUSES_PER_ROUND:  # skip what one round cannot report, forget it
            start = self._highest + 1 - STATUSES_PER_ROUND
            for sequence in [s for s in self._arrivals if s < start]:
                del self._arrivals[sequence]
            self._history_start = start
        packets: list[bytes] = []
        while start <= self._highest:
            feedback, start = self._build(start)
            packets.append(bytes(feedback))
        self._window_start = start
        self._forget(now - HISTORY_SECONDS)
        self.feedback_packets += len(packets)
        return packets

    def _build(self, start: int) -> tuple[TransportFeedback, int]:
        """One feedback packet from `start`; returns it and the first sequence it does not cover."""
        arrivals = self._arrivals
        end = min(self._highest + 1, start + STATUSES_PER_PACKET)
        reference: int | None = None
        offset = 0  # ticks to subtract so that times are relative to the 24-bit reference time
        previous = 0
        statuses: list[int | None] = []
        for sequence in range(start, end):
            arrival = arrivals.get(sequence)
            if arrival is None:
                statuses.append(None)
                continue
            ticks = round(arrival * TICKS_PER_SECOND)
            if reference is None:
                base = ticks // TICKS_PER_REFERENCE
                reference = base % REFERENCE_MODULO
                offset = (base - reference) * TICKS_PER_REFERENCE
            elif not LARGE_DELTA_MIN <= ticks - previous <= LARGE_DELTA_MAX:
                break  # too far from the previous arrival for a delta: the next packet starts here
            previous = ticks
            statuses.append(ticks - offset)
        feedback = TransportFeedback(
            self.sender_ssrc, self.media_ssrc, start & 0xFFFF, reference or 0, self._count, statuses
        )
        self._count = (self._count + 1) & 0xFF
        return feedback, start + len(statuses)

    def _forget(self, before: float) -> None:
        """Drop reported arrivals older than `before` (and reported losses below them)."""
        arrivals = self._arrivals
        sequence = self._history_start
        window = self._window_start
        while sequence < window:
            arrival = arrivals.get(sequence)
            if arrival is not None:
                if arrival >= before:
                    break
                del arrivals[sequence]
            sequence += 1
        self._history_start = sequence
