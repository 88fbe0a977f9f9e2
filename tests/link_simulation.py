"""A sender, a bottleneck link and a receiver in virtual time, wired through the real transport-wide units:
SendHistory stamps and remembers every packet, ArrivalRecorder reports arrivals every 100 ms as feedback bytes,
which are parsed and fed to the BandwidthEstimator. No sockets, no wall clock."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from sfuctl.rtc.arrival_recorder import ArrivalRecorder
from sfuctl.rtc.bandwidth_estimator import BandwidthEstimator
from sfuctl.rtc.send_history import SendHistory
from sfuctl.rtc.transport_feedback import TransportFeedback

STEP = 0.001  # the simulation's time step
MEDIA_PACKET = 1200  # bytes per media packet
PROBE_PACKET = 280  # bytes per padding-only probe packet (255 bytes of padding and the header)
ONE_WAY_DELAY = 0.025
QUEUE_SECONDS = 0.3  # the bottleneck's queue holds this long at the link's starting capacity


class LinkSimulation:
    """Media paced at the estimate through a FIFO bottleneck of capacity `capacity(t)` with a drop-tail queue."""

    def __init__(self, capacity: Callable[[float], float]) -> None:
        self.capacity = capacity
        self.history = SendHistory()
        self.recorder = ArrivalRecorder(sender_ssrc=1, media_ssrc=2)
        self.estimator = BandwidthEstimator()
        self.estimator.on_rtt(2 * ONE_WAY_DELAY)
        self.queue_bytes = capacity(0.0) * QUEUE_SECONDS / 8
        self.now = 0.0
        self.dropped = 0
        self.samples: list[tuple[float, float]] = []  # (time, estimate)
        self._link_free = 0.0
        self._budget = 0.0
        self._in_flight: deque[tuple[float, int]] = deque()  # (arrival, sequence)
        self._feedback: deque[tuple[float, bytes]] = deque()  # (delivery, packet)
        self._probes: deque[tuple[float, int, int]] = deque()  # (send time, size, cluster)

    def run(self, until: float) -> None:
        while self.now < until:
            self._step()
            self.now = round(self.now + STEP, 6)
            if round(self.now * 1000) % 100 == 0:
                self.samples.append((self.now, self.estimator.available_bps))

    def estimates(self, start: float, end: float) -> list[float]:
        return [bps for t, bps in self.samples if start <= t <= end]

    def _step(self) -> None:
        now = self.now
        estimator = self.estimator
        for cluster in estimator.probes(now):  # clusters go one after another, each paced at its rate
            count = max(cluster.packets, -(-cluster.bytes // PROBE_PACKET))
            interval = PROBE_PACKET * 8 / cluster.bitrate_bps
            start = max(now, self._probes[-1][0] + interval) if self._probes else now
            for index in range(count):
                self._probes.append((start + index * interval, PROBE_PACKET, cluster.id))
        while self._probes and self._probes[0][0] <= now:
            _, size, cluster = self._probes.popleft()
            self._send(self.history.add_probe(size, now, cluster), size)
        self._budget = min(self._budget + estimator.available_bps * STEP / 8, 2 * MEDIA_PACKET)
        while self._budget >= MEDIA_PACKET:
            self._budget -= MEDIA_PACKET
            self._send(self.history.add(MEDIA_PACKET, now), MEDIA_PACKET)
        while self._in_flight and self._in_flight[0][0] <= now:
            arrival, sequence = self._in_flight.popleft()
            self.recorder.record(sequence, arrival)
        for packet in self.recorder.feedback(now):
            self._feedback.append((now + ONE_WAY_DELAY, packet))
        while self._feedback and self._feedback[0][0] <= now:
            feedback = TransportFeedback.parse(self._feedback.popleft()[1])
            estimator.on_feedback(self.history.on_feedback(feedback, now), now)

    def _send(self, sequence: int, size: int) -> None:
        now = self.now
        capacity = self.capacity(now)
        backlog = max(0.0, self._link_free - now) * capacity / 8
        if backlog + size > self.queue_bytes:
            self.dropped += 1
            return
        self._link_free = max(now, self._link_free) + size * 8 / capacity
        self._in_flight.append((self._link_free + ONE_WAY_DELAY, sequence))
