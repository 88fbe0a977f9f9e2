"""Prober: sends a transport's probe clusters as padding-only RTP packets on its own probe SSRC.

A cluster (probe_controller.py) is a short burst at a target bitrate: whether the path delivers it at that rate
says whether the transport can take more. Its packets go on a dedicated SSRC announced to the peer (mediasoup's
"probator"), so no consumer's sequence numbers are used; each takes the transport's next transport-wide sequence
in its SendHistory (marked with the cluster, like the media packets sent between two of them: the cluster's
result is what the path took while it ran), and carries nothing but RTP padding, which a receiver discards. They
are paced at the cluster's rate on the event loop (one timer at a time).
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
from collections import deque
from collections.abc import Callable

from .probe_controller import ProbeCluster
from .rtp import build_extension_block, find_extension
from .send_history import SendHistory
from .transport_feedback import extension_value

# Padding bytes per probe packet: the most one packet's padding count (its last byte) can say.
PADDING = 255
# The RTP clock of the probe SSRC (video's), for timestamps that advance with the wall clock.
CLOCK_RATE = 90_000
# Packets due within this long of each other leave together (the loop's timers have ~1 ms grain).
SEND_SLACK = 0.0005
# Packets waiting at most: a burst of clusters can never make the queue grow without bound.
MAX_QUEUED = 500

_pack_header = struct.Struct("!BBHII").pack_into


class Prober:
    """Probe packets for one transport: `send_rtp` protects and sends a packet, `history` stamps it."""

    def __init__(
        self,
        payload_type: int,
        transport_cc_id: int,
        history: SendHistory,
        send_rtp: Callable[[bytes], None],
        ssrc: int | None = None,
    ) -> None:
        self.ssrc = ssrc if ssrc is not None else random.randint(1, 0xFFFFFFFF)
        self.packets_sent = 0
        self.payload_type = payload_type & 0x7F  # the owner may change it (to a video one negotiated later)
        self._history = history
        self._send_rtp = send_rtp
        self._sequence = random.randint(0, 0xFFFF)
        self._extension = build_extension_block([(transport_cc_id, extension_value(0))])
        # Where the transport-wide sequence sits (find_extension reads a header saying "extension").
        self._seq_offset = find_extension(b"\x90" + bytes(11) + self._extension, transport_cc_id)
        self._padding = bytes(PADDING - 1) + bytes([PADDING])
        self._queue: deque[tuple[float, int]] = deque()  # (due, cluster id)
        self._previous: tuple[int, int] | None = None  # (cluster, transport-wide sequence) of the last probe
        self._timer: asyncio.TimerHandle | None = None

    def send(self, clusters: list[ProbeCluster]) -> None:
        """Queue the clusters, one after another, each paced at its bitrate."""
        if not clusters:
            return
        loop = asyncio.get_running_loop()
        size = 12 + len(self._extension) + PADDING
        queue = self._queue
        start = max(loop.time(), queue[-1][0]) if queue else loop.time()
        for cluster in clusters:
            count = max(cluster.packets, -(-cluster.bytes // size))
            interval = size * 8 / cluster.bitrate_bps
            for index in range(count):
                if len(queue) >= MAX_QUEUED:
                    break
                queue.append((start + index * interval, cluster.id))
            start += count * interval
        if self._timer is None:
            self._timer = loop.call_at(queue[0][0], self._flush)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()

    def _flush(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        horizon = loop.time() + SEND_SLACK
        queue = self._queue
        while queue and queue[0][0] <= horizon:
            self._send(queue.popleft()[1])
        if queue:
            self._timer = loop.call_at(queue[0][0], self._flush)

    def _send(self, cluster: int) -> None:
        now = time.monotonic()
        header = bytearray(12) + self._extension
        self._sequence = (self._sequence + 1) & 0xFFFF
        timestamp = int(now * CLOCK_RATE) & 0xFFFFFFFF
        _pack_header(header, 0, 0xB0, self.payload_type, self._sequence, timestamp, self.ssrc)  # V=2, P, X
        size = len(header) + PADDING
        history = self._history
        sequence = history.add_probe(size, now, cluster)
        previous = self._previous
        if previous is not None and previous[0] == cluster:  # the media sent since the cluster's last probe
            history.join_cluster(previous[1] + 1, sequence, cluster)
        self._previous = (cluster, sequence)
        struct.pack_into("!H", header, self._seq_offset, sequence)
        self.packets_sent += 1
        self._send_rtp(bytes(header) + self._padding)
