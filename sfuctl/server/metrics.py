"""Prometheus metrics at GET /metrics: read from the live rooms at scrape time, labelled by room and kind only."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable, Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .auth import Authenticator, check_metrics_access
from .simulcast_consumer import SimulcastConsumer

if TYPE_CHECKING:
    from .worker import Worker

Labels = tuple[str, str]  # (room, kind)


@dataclass(frozen=True)
class CounterSpec:
    """A counter summed over producers or consumers: metric name (without _total), help, and what it reads."""

    name: str
    help: str
    read: Callable[[Any], int]


PRODUCER_COUNTERS = (
    CounterSpec("sfuctl_rtp_received_packets", "RTP packets received from publishers.", lambda p: p.meter.packets),
    CounterSpec("sfuctl_rtp_received_bytes", "RTP bytes (header and payload, before SRTP) received from publishers.", lambda p: p.meter.bytes),
    CounterSpec("sfuctl_rtcp_nacks_sent", "Generic NACK packets sent to publishers.", lambda p: p.rtcp.nacks_sent),
    CounterSpec("sfuctl_rtcp_plis_sent", "PLI packets sent to publishers.", lambda p: p.rtcp.plis_sent),
    CounterSpec("sfuctl_rtcp_firs_sent", "FIR packets sent to publishers.", lambda p: p.rtcp.firs_sent),
)
CONSUMER_COUNTERS = (
    CounterSpec("sfuctl_rtp_sent_packets", "RTP packets sent to subscribers, retransmissions included.", lambda c: c.meter.packets),
    CounterSpec("sfuctl_rtp_sent_bytes", "RTP bytes (header and payload, before SRTP) sent to subscribers.", lambda c: c.meter.bytes),
    CounterSpec("sfuctl_rtp_retransmitted_packets", "RTP packets retransmitted on a subscriber's NACK.", lambda c: c.rtcp.retransmitted),
    CounterSpec(
        "sfuctl_rtp_retransmissions_refused",
        "NACKed packets not resent: resent less than an RTT ago, or over the retransmission budget.",
        lambda c: c.rtcp.budget.refused,
    ),
    CounterSpec("sfuctl_rtcp_nacks_received", "Generic NACK packets received from subscribers.", lambda c: c.rtcp.nacks_received),
    CounterSpec("sfuctl_rtcp_plis_received", "PLI packets received from subscribers.", lambda c: c.rtcp.plis_received),
    CounterSpec("sfuctl_rtcp_firs_received", "FIR packets received from subscribers.", lambda c: c.rtcp.firs_received),
    CounterSpec(
        "sfuctl_consumer_layer_switches",
        "Simulcast layer switches of consumers (one per keyframe-gated change of the forwarded encoding).",
        lambda c: c.switch.switches if isinstance(c, SimulcastConsumer) else 0,
    ),
)

DATA_PRODUCER_COUNTERS = (
    CounterSpec("sfuctl_data_received_messages", "Data channel messages received from peers.", lambda d: d.messages_in),
    CounterSpec("sfuctl_data_received_bytes", "Data channel message bytes received from peers.", lambda d: d.bytes_in),
    CounterSpec(
        "sfuctl_data_dropped_messages",
        "Data channel messages dropped: over max-message-size or the peer's rate.",
        lambda d: d.dropped_oversize + d.dropped_rate,
    ),
)
DATA_CONSUMER_COUNTERS = (
    CounterSpec("sfuctl_data_sent_messages", "Data channel messages relayed to peers.", lambda d: d.messages_out),
    CounterSpec("sfuctl_data_sent_bytes", "Data channel message bytes relayed to peers.", lambda d: d.bytes_out),
    CounterSpec(
        "sfuctl_data_send_dropped_messages",
        "Data channel messages not relayed: the peer's association was full or closed.",
        lambda d: d.dropped,
    ),
)


class RetiredCounts:
    """Keeps counters monotonic while producers and consumers come and go.

    Live objects are summed at each scrape; an object gone since the previous scrape adds the values it had
    then to its room's retired totals (what it counted after that scrape is not seen). A closed room's series
    are dropped, so the room label only ever names live rooms.
    """

    def __init__(self, specs: tuple[CounterSpec, ...]) -> None:
        self.specs = specs
        self._last: dict[str, tuple[Labels, tuple[int, ...]]] = {}
        self._retired: dict[Labels, list[int]] = {}

    def totals(self, objects: Iterable[tuple[Labels, str, object]], rooms: set[str]) -> dict[Labels, list[int]]:
        """Sum per (room, kind) of the live objects (labels, id, object) plus what retired ones counted."""
        current: dict[str, tuple[Labels, tuple[int, ...]]] = {}
        for labels, ident, obj in objects:
            current[ident] = (labels, tuple(spec.read(obj) for spec in self.specs))
        for ident, (labels, values) in self._last.items():
            if ident not in current:
                retired = self._retired.setdefault(labels, [0] * len(self.specs))
                for index, value in enumerate(values):
                    retired[index] += value
        self._retired = {labels: v for labels, v in self._retired.items() if labels[0] in rooms}
        self._last = current
        sums: dict[Labels, list[int]] = {labels: list(values) for labels, values in self._retired.items()}
        for labels, values in current.values():
            row = sums.setdefault(labels, [0] * len(self.specs))
            for index, value in enumerate(values):
                row[index] += value
        return sums


class SfuCollector(Collector):
    """Metrics of one worker's rooms, computed from the live objects whenever Prometheus scrapes."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._producer_counts = RetiredCounts(PRODUCER_COUNTERS)
        self._consumer_counts = RetiredCounts(CONSUMER_COUNTERS)
        self._data_producer_counts = RetiredCounts(DATA_PRODUCER_COUNTERS)
        self._data_consumer_counts = RetiredCounts(DATA_CONSUMER_COUNTERS)

    def collect(self) -> Iterator[Metric]:
        routers = list(self.worker.routers.values())
        rooms = {router.name for router in routers}
        producers = [((r.name, p.kind), p) for r in routers for p in r.producers.values()]
        consumers = [((r.name, c.kind), c) for r in routers for peer in r.peers.values() for c in peer.consumers.values()]

        yield _gauge("sfuctl_rooms", "Rooms (routers) open.", [], [((), len(routers))])
        yield _gauge("sfuctl_transports", "ICE/DTLS transports open.", [], [((), len(self.worker.transports))])
        yield _gauge("sfuctl_peers", "Peers joined, per room.", ["room"], [((r.name,), len(r.peers)) for r in routers])
        yield _gauge("sfuctl_producers", "Producers, per room and kind.", ["room", "kind"], _count(producers).items())
        yield _gauge("sfuctl_consumers", "Consumers, per room and kind.", ["room", "kind"], _count(consumers).items())
        yield _gauge(
            "sfuctl_receive_bits_per_second",
            "Media bitrate received from publishers over the last report interval.",
            ["room", "kind"],
            _aggregate(producers, lambda p: p.meter.bitrate_bps, sum).items(),
        )
        yield _gauge(
            "sfuctl_send_bits_per_second",
            "Media bitrate sent to subscribers over the last report interval.",
            ["room", "kind"],
            _aggregate(consumers, lambda c: c.meter.bitrate_bps, sum).items(),
        )
        reported = [(labels, c) for labels, c in consumers if c.rtcp.reports_received]
        yield _gauge(
            "sfuctl_consumer_loss_ratio",
            "Mean share of packets lost on the way to subscribers (their receiver reports, last ~5 s).",
            ["room", "kind"],
            _aggregate(reported, lambda c: c.quality.fraction_lost, _mean).items(),
        )
        yield _gauge(
            "sfuctl_consumer_jitter_seconds",
            "Mean interarrival jitter reported by subscribers.",
            ["room", "kind"],
            _aggregate(reported, lambda c: (c.rtcp.jitter_ms or 0.0) / 1000, _mean).items(),
        )
        with_rtt = [(labels, c) for labels, c in reported if c.rtcp.rtt_ms is not None]
        yield _gauge(
            "sfuctl_consumer_rtt_seconds",
            "Mean round-trip time to subscribers (RTCP LSR/DLSR).",
            ["room", "kind"],
            _aggregate(with_rtt, lambda c: c.rtcp.rtt_ms / 1000, _mean).items(),
        )
        yield _gauge(
            "sfuctl_consumer_score_min",
            "Lowest consumer quality score (0-10).",
            ["room", "kind"],
            _aggregate(consumers, lambda c: c.quality.score, min).items(),
        )
        yield _gauge(
            "sfuctl_producer_score_min",
            "Lowest producer quality score (0-10).",
            ["room", "kind"],
            _aggregate(producers, lambda p: p.quality.score, min).items(),
        )
        refusals = CounterMetricFamily(
            "sfuctl_refusals", "Requests refused to keep a client within its quotas, by reason (docs/limits.md).", labels=["reason"]
        )
        for reason, count in sorted(self.worker.refusals.by_reason.items()):
            refusals.add_metric([reason], count)
        yield refusals
        tcp = self.worker.tcp
        if tcp is not None:
            yield _gauge("sfuctl_tcp_connections", "ICE-TCP connections open (serve --ice-tcp).", [], [((), len(tcp.by_address))])
            dropped = CounterMetricFamily("sfuctl_tcp_dropped", "Packets dropped because an ICE-TCP peer left 256 KB unread.")
            dropped.add_metric([], tcp.total_dropped)
            yield dropped
            refused = CounterMetricFamily("sfuctl_tcp_refused", "ICE-TCP connections closed before a valid check (bad first frame, silence).")
            refused.add_metric([], tcp.refused)
            yield refused
        yield from _counters(self._producer_counts, [(labels, p.id, p) for labels, p in producers], rooms)
        yield from _counters(self._consumer_counts, [(labels, c.id, c) for labels, c in consumers], rooms)
        data_producers = [((r.name, "data"), d) for r in routers for d in r.data_producers.values()]
        data_consumers = [((r.name, "data"), d) for r in routers for p in r.peers.values() for d in p.data_consumers.values()]
        yield _gauge("sfuctl_data_producers", "Data producers, per room.", ["room"], [((r.name,), len(r.data_producers)) for r in routers])
        yield _gauge(
            "sfuctl_data_consumers",
            "Data consumers, per room.",
            ["room"],
            [((r.name,), sum(len(p.data_consumers) for p in r.peers.values())) for r in routers],
        )
        yield from _counters(self._data_producer_counts, [(labels, d.id, d) for labels, d in data_producers], rooms)
        yield from _counters(self._data_consumer_counts, [(labels, d.id, d) for labels, d in data_consumers], rooms)


def metrics_handler(worker: Worker, auth: Authenticator) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The GET /metrics handler of one worker: its rooms plus this process's CPU and memory."""
    registry = CollectorRegistry()
    registry.register(SfuCollector(worker))
    ProcessCollector(registry=registry)

    async def handler(request: web.Request) -> web.Response:
        check_metrics_access(auth, request)
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return handler


def _gauge(name: str, help: str, labels: list[str], samples: Iterable[tuple[tuple, float]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help, labels=labels)
    for label_values, value in samples:
        family.add_metric(list(label_values), value)
    return family


def _counters(counts: RetiredCounts, objects: list[tuple[Labels, str, object]], rooms: set[str]) -> Iterator[Metric]:
    sums = counts.totals(objects, rooms)
    for index, spec in enumerate(counts.specs):
        family = CounterMetricFamily(spec.name, spec.help, labels=["room", "kind"])
        for labels, values in sorted(sums.items()):
            family.add_metric(list(labels), values[index])
        yield family


def _count(objects: list[tuple[Labels, object]]) -> dict[Labels, int]:
    counts: dict[Labels, int] = defaultdict(int)
    for labels, _ in objects:
        counts[labels] += 1
    return counts


def _aggregate(objects: list, read: Callable, combine: Callable[[list[float]], float]) -> dict[Labels, float]:
    values: dict[Labels, list[float]] = defaultdict(list)
    for labels, obj in objects:
        values[labels].append(read(obj))
    return {labels: combine(v) for labels, v in values.items()}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)
