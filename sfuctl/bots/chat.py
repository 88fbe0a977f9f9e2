"""ChatTraffic: a bot's chat-like load on data channels, and what each receiving bot measures of it.

A sending bot opens a "chat" channel on its send connection and sends `rate` messages per second, each a small
JSON object carrying its sequence number and send time (wall clock: bots on one host, or on hosts whose clocks
are synchronized, compare them). A receiving bot gets one channel per sender from the server
(`dataConsumerAdded` names the sender) and measures, per sender: messages received, the delivery ratio over
the sequence numbers it saw (received / (last - first + 1): messages missing between the first and the last
one received; a message lost after the last one is not seen), messages arriving after a higher sequence
number (out of order) and the latency percentiles.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sfuctl.client.data import DataLink, Message
from sfuctl.client.offer import AnswerMedia

from .stats import percentile

CHAT_LABEL = "chat"
# Bytes of filler in each message, so a message is about the size of a short chat line (~200 bytes).
FILLER = "x" * 150


@dataclass
class ChatStream:
    """What one receiving bot measured of one sender's messages."""

    sender: str  # the sender's peer id
    first_seq: int | None = None
    last_seq: int = -1
    received: int = 0
    out_of_order: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def add(self, seq: int, latency_ms: float) -> None:
        if self.first_seq is None or seq < self.first_seq:
            self.first_seq = seq
        if seq < self.last_seq:
            self.out_of_order += 1
        self.last_seq = max(self.last_seq, seq)
        self.received += 1
        self.latencies_ms.append(latency_ms)

    def stats(self) -> dict:
        span = self.last_seq - self.first_seq + 1 if self.first_seq is not None else 0
        latencies = sorted(self.latencies_ms)
        return {
            "from": self.sender,
            "received": self.received,
            "delivery_ratio": min(1.0, self.received / span) if span else None,
            "out_of_order": self.out_of_order,
            "latency_p50_ms": percentile(latencies, 0.5),
            "latency_p95_ms": percentile(latencies, 0.95),
        }


class ChatTraffic:
    """One bot's chat: sends on its send connection's DataLink (if `rate` > 0), measures what its receive
    connection's DataLink gets. `clock` is the wall clock (time.time) the messages carry."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.time) -> None:
        self.rate = rate
        self.clock = clock
        self.sent = 0
        self.refused = 0  # messages the bot's own association would not take (full, or the channel closed)
        self.undecodable = 0
        self.streams: dict[str, ChatStream] = {}
        self._senders: dict[int, str] = {}  # receive-side stream id -> sender peer id (dataConsumerAdded)
        self._early: dict[int, list[Message]] = {}  # messages of a stream not named yet
        self._send_link: DataLink | None = None
        self._send_answer: AnswerMedia | None = None
        self._recv_link: DataLink | None = None
        self._recv_answer: AnswerMedia | None = None
        self._task: asyncio.Task | None = None

    # -- wiring (the bot calls these as its connections come up) ------------------------------------------
    def attach_send(self, link: DataLink, answer: AnswerMedia) -> None:
        self._send_link, self._send_answer = link, answer

    def attach_receive(self, link: DataLink, answer: AnswerMedia) -> None:
        link.on_message = self._on_message
        self._recv_link, self._recv_answer = link, answer

    def send_connected(self) -> None:
        """The send connection is up: start SCTP, then send at the rate."""
        if self._send_link is not None and self._send_answer is not None and self._task is None:
            self._send_link.start(self._send_answer)
            if self.rate > 0:
                self._task = asyncio.create_task(self._send_loop(self._send_link), name="chat-sender")

    def receive_connected(self) -> None:
        if self._recv_link is not None and self._recv_answer is not None and self._recv_link.sctp.state == "new":
            self._recv_link.start(self._recv_answer)

    def on_consumer_added(self, params: dict) -> None:
        """`dataConsumerAdded`: which sender a receive-side stream carries."""
        stream_id, sender = params.get("streamId"), params.get("peerId")
        if not isinstance(stream_id, int) or not isinstance(sender, str) or params.get("label") != CHAT_LABEL:
            return
        self._senders[stream_id] = sender
        for message in self._early.pop(stream_id, []):
            self._count(sender, message)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for link in (self._send_link, self._recv_link):
            if link is not None:
                link.close()

    def report(self) -> dict:
        return {
            "rate": self.rate,
            "sent": self.sent,
            "refused": self.refused,
            "undecodable": self.undecodable,
            "received": [stream.stats() for stream in self.streams.values()],
        }

    # -- sending and receiving ------------------------------------------------------------------------------
    async def _send_loop(self, link: DataLink) -> None:
        await link.opened.wait()
        channel = link.open(CHAT_LABEL)
        interval = 1.0 / self.rate
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            message = json.dumps({"seq": self.sent, "t": self.clock(), "text": FILLER})
            if link.send(channel, message):
                self.sent += 1
            else:
                self.refused += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    def _on_message(self, stream_id: int, message: Message, ppid: int) -> None:
        sender = self._senders.get(stream_id)
        if sender is None:
            self._early.setdefault(stream_id, []).append(message)
            return
        self._count(sender, message)

    def _count(self, sender: str, message: Message) -> None:
        now = self.clock()
        try:
            body = json.loads(message)
            seq, sent_at = int(body["seq"]), float(body["t"])
        except (ValueError, TypeError, KeyError):
            self.undecodable += 1
            return
        stream = self.streams.get(sender)
        if stream is None:
            stream = self.streams[sender] = ChatStream(sender)
        stream.add(seq, max(0.0, (now - sent_at) * 1000.0))
