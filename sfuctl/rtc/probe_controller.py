"""ProbeController: when to send probe clusters (short bursts above the estimate) and what they showed.

At the start a transport sends two clusters, at 3x and 6x its start rate (libwebrtc goog_cc's initial probes);
while results keep coming near the target, it probes again at twice the new estimate (exponential probing),
until a result falls short or MAX_PROBE_WAIT passes without one. An owner can also ask for a probe to a target
(before a switch to a higher layer). A cluster's result is what the receiver got during it: the lower of the
send and receive rates, and a little under the receive rate when the link could not keep up.
"""

from __future__ import annotations

from dataclasses import dataclass

from .send_history import PacketResult

# Initial probes, as multiples of the start rate.
INITIAL_PROBE_FACTORS = (3.0, 6.0)
# Probe further (at twice the result) when a result reaches this share of the cluster's target.
FURTHER_PROBE_SHARE = 0.7
FURTHER_PROBE_FACTOR = 2.0
# Stop waiting for a result this long after the last cluster was sent.
MAX_PROBE_WAIT = 1.0
# A cluster lasts at least this long and has at least this many packets (libwebrtc: 15 ms, 5 packets; longer
# here because the server paces from an event loop with ~1 ms timer granularity).
PROBE_DURATION = 0.03
PROBE_MIN_PACKETS = 5
# A result needs 80% of the cluster's packets and bytes received, send and receive spans within 0..1 s, and
# a receive rate at most twice the send rate (else the timing is not to be trusted).
RESULT_MIN_SHARE = 0.8
RESULT_MAX_SPAN = 1.0
RESULT_MAX_RATIO = 2.0
# A receive rate under 90% of the send rate means the link was saturated: the result is 95% of what arrived.
SATURATED_RATIO = 0.9
SATURATED_SHARE = 0.95
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
    __slots__ = ("target", "expected_bytes", "expected_packets", "sent", "received")

    def __init__(self, cluster: ProbeCluster) -> None:
        self.target = cluster.bitrate_bps
        self.expected_bytes = cluster.bytes
        self.expected_packets = cluster.packets
        self.sent: list[tuple[float, int]] = []
        self.received: list[tuple[float, int]] = []


def cluster_for(cluster_id: int, bitrate_bps: float) -> ProbeCluster:
    """A cluster at `bitrate_bps` lasting PROBE_DURATION."""
    return ProbeCluster(cluster_id, bitrate_bps, int(bitrate_bps * PROBE_DURATION / 8), PROBE_MIN_PACKETS)


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
        if estimate_bps > self._further_above and estimate_bps < self.max_bps:
            return self._make([min(estimate_bps * FURTHER_PROBE_FACTOR, self.max_bps)], now)
        return []

    def request(self, target_bps: float, now: float) -> list[ProbeCluster]:
        """A probe to `target_bps` on the owner's behalf (none while another is awaited)."""
        if now <= self._waiting_until:
            return []
        return self._make([min(target_bps, self.max_bps)], now, further=False)

    def stop(self) -> None:
        """Over-use: no further probes until asked."""
        self._further_above = None

    def _make(self, targets: list[float], now: float, further: bool = True) -> list[ProbeCluster]:
        clusters = []
        for target in targets:
            cluster = cluster_for(self._next_id, target)
            self._next_id += 1
            self._tallies[cluster.id] = _Tally(cluster)
            clusters.append(cluster)
        while len(self._tallies) > CLUSTERS_KEPT:
            del self._tallies[next(iter(self._tallies))]
        self.clusters_sent += len(clusters)
        self._further_above = max(targets) * FURTHER_PROBE_SHARE if further else None
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
                tally.received.append((result.arrival, result.size))
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
        received = tally.received
        if len(received) < RESULT_MIN_SHARE * tally.expected_packets:
            return None
        if sum(size for _, size in received) < RESULT_MIN_SHARE * tally.expected_bytes:
            return None
        sent = sorted(tally.sent)
        received = sorted(received)
        send_span = sent[-1][0] - sent[0][0]
        receive_span = received[-1][0] - received[0][0]
        if not 0 < send_span <= RESULT_MAX_SPAN or not 0 < receive_span <= RESULT_MAX_SPAN:
            return None
        send_rate = sum(size for _, size in sent[:-1]) * 8 / send_span
        receive_rate = sum(size for _, size in received[1:]) * 8 / receive_span
        if receive_rate > RESULT_MAX_RATIO * send_rate:
            return None
        if receive_rate < SATURATED_RATIO * send_rate:
            return SATURATED_SHARE * receive_rate
        return min(send_rate, receive_rate)
