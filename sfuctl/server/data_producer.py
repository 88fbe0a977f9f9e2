"""DataProducer: one data channel a peer opened on its send transport; its messages go to every DataConsumer.

Messages are relayed as they came, PPID and bytes (text, binary, and the empty-message PPIDs 56/57), never
decoded. A message over the advertised max-message-size, or over its peer's message rate, is dropped and
counted here; the channel stays open.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..rtc.dcep import ChannelParameters
from .rate_limit import TokenBucket

if TYPE_CHECKING:
    from .data_consumer import DataConsumer
    from .peer import Peer
    from .transport import Transport


class DataProducer:
    """A peer's data channel (mediasoup's DataProducer): label, protocol, ordering and reliability."""

    def __init__(
        self,
        *,
        id: str,
        peer: Peer,
        transport: Transport,
        stream_id: int,
        parameters: ChannelParameters,
        max_message_size: int,
        rate: TokenBucket,
    ) -> None:
        self.id = id
        self.peer = peer
        self.transport = transport
        self.stream_id = stream_id
        self.parameters = parameters
        self.max_message_size = max_message_size
        self.closed = False
        self.consumers: list[DataConsumer] = []
        self.messages_in = 0
        self.bytes_in = 0
        self.dropped_oversize = 0
        self.dropped_rate = 0
        self._rate = rate

    def receive(self, ppid: int, payload: bytes, now: float) -> None:
        """One message from the channel: count it, apply the limits, hand it to every consumer."""
        self.messages_in += 1
        self.bytes_in += len(payload)
        if len(payload) > self.max_message_size:
            self.dropped_oversize += 1
            return
        if not self._rate.take(now):
            self.dropped_rate += 1
            return
        for consumer in self.consumers:
            consumer.send(ppid, payload)

    def add_consumer(self, consumer: DataConsumer) -> None:
        self.consumers.append(consumer)

    def remove_consumer(self, consumer: DataConsumer) -> None:
        if consumer in self.consumers:
            self.consumers.remove(consumer)

    def close(self) -> None:
        """Idempotent; the router has closed the consumers first."""
        self.closed = True
        self.consumers.clear()

    def info(self) -> dict:
        return {
            "id": self.id,
            "peerId": self.peer.id,
            "peerName": self.peer.name,
            "streamId": self.stream_id,
            **self.parameters.info(),
        }

    def stats(self) -> dict:
        return {
            "id": self.id,
            "peer": self.peer.id,
            "peer_name": self.peer.name,
            "label": self.parameters.label,
            "stream_id": self.stream_id,
            "messages_in": self.messages_in,
            "bytes_in": self.bytes_in,
            "dropped": self.dropped_oversize + self.dropped_rate,
            "dropped_oversize": self.dropped_oversize,
            "dropped_rate": self.dropped_rate,
            "consumers": len(self.consumers),
        }
