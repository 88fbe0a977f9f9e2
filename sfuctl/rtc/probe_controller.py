"""ProbeController: when to send probe clusters (short bursts above the estimate) and what they showed.

At the start a transport sends two clusters, at 3x and 6x its start rate (libwebrtc goog_cc's initial probes);
while results keep coming near the target, it probes again at twice the new estimate (exponential probing),
until a result falls short or MAX_PROBE_WAIT passes without one. An owner can also ask for a probe to a target
(before a switch to a higher layer). A cluster's result is what the receiver got during it: the lower of the
send and receive rates, and a little under the receive rate when the link could not keep up. As in libwebrtc's
probe estimator, a cluster counts only when most of it was reported, and not when it arrived implausibly faster
than it was sent; arrivals squeezed together at its start (a receiver that was busy, then read a backlog at
once) are left out of the receive rate, which would otherwise look faster than the link.
"""

from __future__ import annotations

from dataclasses import dataclass

from .send_history import PacketResult

# Initial probes, as multiples of the start rate.
INITIAL_PROBE_FACTORS = (3.0, 6.0)
# Probe further (at twice the result) when a result reaches this share of the cluster's target, one cluster per
# result, never past FURTHER_PROBE_MAX_BPS: higher, the probe before an upgrade asks for what a layer needs.
FURTHER_PROBE_SHARE = 0.7
FURTHER_PROBE_FACTOR = 2.0
FURTHER_PROBE_MAX_BPS = 5_000_000.0
# Stop waiting for a result this long after the last cluster was sent.
MAX_PROBE_WAIT = 1.0
# A cluster lasts at least this long and has at least this many packets (libwebrtc: 15 ms, 5 packets; longer
# here because the server paces from an event loop with ~1 ms timer granularity).
PROBE_DURATION = 0.03
# A probe the owner asks for before an upgrade lasts this long: a short burst passes a shaper's burst allowance
# and a queue's free room at any rate (the bots' shaper lets 3000 bytes through at once: at 1.7x a 400 kb/s link
# that lasts ~85 ms), so only a longer one builds the queue whose drain shows the link's rate.
REQUESTED_PROBE_DURATION = 0.2
PROBE_MIN_PACKETS = 5
# A probe packet's size: a 12-byte RTP header, the 8-byte transport-cc extension block and 255 bytes of padding
# (prober.py); a cluster of `bytes` has this many bytes per packet.
PROBE_PACKET_SIZE = 275
# A result needs 80% of the cluster's probe packets and bytes received and its packets reported over at least
# 80% of its duration (media sent meanwhile joins a cluster: counted alone, the first feedback about a 100 ms
# cluster could already have 80% of its bytes), send and receive spans within 0..1 s, and a receive rate at most
# twice the send rate (else the timing is not to be trusted).
RESULT_MIN_SHARE = 0.8
RESULT_MAX_SPAN = 1.0
RESULT_MAX_RATIO = 2.0
# A receive rate under 90% of the send rate means the link was saturated: the result is 95% of what arrived
# once its queue built, the link's own rate (a burst allowance passed the first packets at the send rate): from
# the first packet delayed QUEUED_DELAY more than the least delayed one, when PROBE_MIN_PACKETS arrived after it.
SATURATED_RATIO = 0.9
SATURATED_SHARE = 0.95
QUEUED_DELAY = 0.005
# Arrivals at the start of a cluster are squeezed when they came this much closer together than they were sent
# (a receiver busy for a while reads what queued meanwhile at once): the receive rate starts after them, and
# needs at least PROBE_MIN_PACKETS packets after them.
SQUEEZED_SHARE = 0.25
# Clusters whose packets are tracked at most (older ones are forgotten).
CLUSTERS_KEPT = 8


@dataclass
class ProbeCluster:
    """A burst to send: `bytes` at `bitrate_bps`, in at least `packets` packets."""

    id: int
    bitrate_bps: float
    bytes: int
    packets: int


class _Tally:
    __slots__ = ("target", "duration", "expected_bytes", "expected_packets", "sent", "received")

    def __init__(self, cluster: ProbeCluster) -> None:
        self.target = cluster.bitrate_bps
        self.duration = cluster.bytes * 8 / cluster.bitrate_bps
        self.expected_bytes = cluster.bytes
        self.expected_packets = cluster.packets
        self.sent: list[tuple[float, int]] = []
        self.received: list[tuple[float, float, int]] = []  # (arrival, send time, size)


def cluster_for(cluster_id: int, bitrate_bps: float, duration: float = PROBE_DURATION) -> ProbeCluster:
    """A cluster at `bitrate_bps` lasting `duration`, in packets of PROBE_PACKET_SIZE."""
    size = int(bitrate_bps * duration / 8)
    return ProbeCluster(cluster_id, bitrate_bps, size, max(PROBE_MIN_PACKETS, -(-size // PROBE_PACKET_SIZE)))


class ProbeController:
    """Decides probe clusters for one transport and turns their feedback into results."""

    def __init__(self, start_bps: float, max_bps: float) -> None:
        self.max_bps = max_bps
        self.clusters_sent = 0
        self.results = 0  # clusters that gave a valid result
        self._start_bps = start_bps
        self._started = False
        self._next_id = 1
        self._further_above: float | None = None  # probe further when the estimate exceeds this
        self._last_target = 0.0  # the highest target of the last clusters made
        self._waiting_until = 0.0
        self._tallies: dict[int, _Tally] = {}

    def due(self, estimate_bps: float, now: float) -> list[ProbeCluster]:
        """The clusters to send now, given the current estimate."""
        if not self._started:
            self._started = True
            targets = [min(self._start_bps * factor, self.max_bps) for factor in INITIAL_PROBE_FACTORS]
            return self._make(sorted(set(targets)), now)
        if self._further_above is None:
            return []
        if now > self._waiting_until:
            self._further_above = None
            return []
        if estimate_bps > self._further_above:
            target = min(estimate_bps * FURTHER_PROBE_FACTOR, self.max_bps, FURTHER_PROBE_MAX_BPS)
            if target <= self._last_target:  # at the ceiling already: probing again would show nothing new
                self._further_above = None
                return []
            return self._make([target], now)
        return []

    @property
    def active(self) -> bool:
        """Clusters may become due without being asked for: the initial ones, or further probing under way."""
        return not self._started or self._further_above is not None

    def request(self, target_bps: float, now: float) -> list[ProbeCluster]:
        """A probe to `target_bps` on the owner's behalf (none while another is awaited)."""
        if now <= self._waiting_until:
            return []
        return self._make([min(target_bps, self.max_bps)], now, further=False, duration=REQUESTED_PROBE_DURATION)

    def stop(self) -> None:
        """Over-use: no further probes until asked."""
        self._further_above = None

    def _make(
        self, targets: list[float], now: float, further: bool = True, duration: float = PROBE_DURATION
    ) -> list[ProbeCluster]:
        clusters = []
        for target in targets:
            cluster = cluster_for(self._next_id, target, duration)
            self._next_id += 1
            self._tallies[cluster.id] = _Tally(cluster)
            clusters.append(cluster)
        while len(self._tallies) > CLUSTERS_KEPT:
            del self._tallies[next(iter(self._tallies))]
        self.clusters_sent += len(clusters)
        self._last_target = max(targets)
        self._further_above = self._last_target * FURTHER_PROBE_SHARE if further else None
        self._waiting_until = now + MAX_PROBE_WAIT
        return clusters

    def on_results(self, results: list[PacketResult]) -> float | None:
        """Feed a feedback's packets; returns the best new probe result (bps) it completed, if any."""
        touched: set[int] = set()
        for result in results:
            if result.cluster < 0:
                continue
            tally = self._tallies.get(result.cluster)
            if tally is None:
                continue
            tally.sent.append((result.send_time, result.size))
            if result.arrival is not None:
                tally.received.append((result.arrival, result.send_time, result.size))
            touched.add(result.cluster)
        best = None
        for cluster_id in touched:
            rate = self._result(self._tallies[cluster_id])
            if rate is not None:
                del self._tallies[cluster_id]
                self.results += 1
                best = rate if best is None else max(best, rate)
        return best

    def _result(self, tally: _Tally) -> float | None:
        received = sorted(tally.received)
        if len(received) < RESULT_MIN_SHARE * tally.expected_packets:
            return None
        if sum(size for _, _, size in received) < RESULT_MIN_SHARE * tally.expected_bytes:
            return None
        sent = sorted(tally.sent)
        send_span = sent[-1][0] - sent[0][0]
        if not RESULT_MIN_SHARE * tally.duration <= send_span <= RESULT_MAX_SPAN:
            return None
        received = received[_squeezed_start(received):]
        receive_span = received[-1][0] - received[0][0]
        if len(received) < PROBE_MIN_PACKETS or not 0 < receive_span <= RESULT_MAX_SPAN:
            return None
        send_rate = sum(size for _, size in sent[:-1]) * 8 / send_span
        receive_rate = sum(size for _, _, size in received[1:]) * 8 / receive_span
        if receive_rate > RESULT_MAX_RATIO * send_rate:
            return None
        if receive_rate < SATURATED_RATIO * send_rate:
            return SATURATED_SHARE * min(receive_rate, _queued_rate(received))
        return min(send_rate, receive_rate)


def _queued_rate(received: list[tuple[float, float, int]]) -> float:
    """The receive rate from the first packet of `received` ((arrival, send time, size) in arrival order) that
    waited in a queue, or infinity when too few did."""
    least = min(arrival - sent for arrival, sent, _ in received)
    for first, (arrival, sent, _) in enumerate(received):
        if arrival - sent > least + QUEUED_DELAY:
            break
    else:
        return float("inf")
    span = received[-1][0] - received[first][0]
    if len(received) - first <= PROBE_MIN_PACKETS or span <= 0:
        return float("inf")
    return sum(size for _, _, size in received[first + 1:]) * 8 / span


def _squeezed_start(received: list[tuple[float, float, int]]) -> int:
    """The index of the last of the packets squeezed together at the start of `received` ((arrival, send time,
    size) in arrival order): each arrived less than SQUEEZED_SHARE of its send gap after the one before."""
    start = 0
    for (arrival, sent, _), (next_arrival, next_sent, _) in zip(received, received[1:]):
        if next_arrival - arrival >= SQUEEZED_SHARE * (next_sent - sent):
            break
        start += 1
    return start
