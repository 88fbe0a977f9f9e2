"""DataConsumer: one peer's copy of a DataProducer, a channel the server opened on the peer's receive transport."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..rtc.sctp import SctpAssociation
    from .data_producer import DataProducer
    from .peer import Peer


class DataConsumer:
    """Sends a DataProducer's messages on its own stream id (the server's RFC 8832 parity)."""

    def __init__(self, *, id: str, peer: Peer, data_producer: DataProducer, sctp: SctpAssociation, stream_id: int) -> None:
        self.id = id
        self.peer = peer
        self.data_producer = data_producer
        self.stream_id = stream_id
        self.closed = False
        self.messages_out = 0
        self.bytes_out = 0
        self.dropped = 0
        self._sctp = sctp

    def send(self, ppid: int, payload: bytes) -> None:
        """Queue one message; dropped (counted) when the peer's association refuses it (full or too big)."""
        if self._sctp.send(self.stream_id, ppid, payload):
            self.messages_out += 1
            self.bytes_out += len(payload)
        else:
            self.dropped += 1

    def close(self) -> None:
        """Idempotent: stop relaying and reset the stream (the peer's channel closes)."""
        if self.closed:
            return
        self.closed = True
        self.data_producer.remove_consumer(self)
        self._sctp.close_channel(self.stream_id)

    def info(self) -> dict:
        producer = self.data_producer
        return {
            "id": self.id,
            "dataProducerId": producer.id,
            "peerId": producer.peer.id,
            "streamId": self.stream_id,
            **producer.parameters.info(),
        }

    def stats(self) -> dict:
        return {
            "id": self.id,
            "peer": self.peer.id,
            "data_producer": self.data_producer.id,
            "label": self.data_producer.parameters.label,
            "stream_id": self.stream_id,
            "messages_out": self.messages_out,
            "bytes_out": self.bytes_out,
            "dropped": self.dropped,
        }
