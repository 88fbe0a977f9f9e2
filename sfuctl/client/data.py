"""DataLink: a client's data channels on one of its connections to the SFU (docs/protocol.md, Data channels).

On the send connection a client opens channels (each becomes a DataProducer on the server); on the receive
connection the server opens one channel per DataConsumer and says which in `dataConsumerAdded`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sfuctl.rtc.connection import Connection
from sfuctl.rtc.dcep import ChannelParameters, decode_message, encode_message
from sfuctl.rtc.sctp import DEFAULT_MAX_MESSAGE_SIZE, SctpAssociation
from sfuctl.rtc.sdp import SCTP_PORT

from .offer import AnswerMedia, OfferSection

Message = str | bytes


def data_section(mid: str) -> OfferSection:
    """The m=application section that asks for data channels on a connection."""
    return OfferSection(mid, "application", "sendrecv", ())


class DataLink:
    """The SCTP association of one client connection and its channels, with messages as str/bytes.

    `on_message(stream_id, message, ppid)` is called for each message; `channels` holds every open channel
    (stream id -> parameters), those this end opened and those the server opened.
    """

    def __init__(self, connection: Connection, on_message: Callable[[int, Message, int], None] | None = None) -> None:
        self.connection = connection
        self.on_message = on_message
        self.opened = asyncio.Event()
        self.received = 0
        self.undecodable = 0
        self.sctp = SctpAssociation(connection, on_open=self.opened.set, on_message=self._on_message)

    @property
    def channels(self) -> dict[int, ChannelParameters]:
        return {stream_id: stream.parameters for stream_id, stream in self.sctp.streams.items()}

    def start(self, answer: AnswerMedia) -> None:
        """Begin the association once the connection is connected (the answer gives the server's SCTP port)."""
        self.sctp.start(answer.sctp_port or SCTP_PORT, answer.max_message_size or DEFAULT_MAX_MESSAGE_SIZE)

    def open(self, label: str, **parameters: object) -> int:
        """Open a channel (ChannelParameters' fields by name); its stream id."""
        return self.sctp.open_channel(ChannelParameters(label, **parameters))  # type: ignore[arg-type]

    def send(self, stream_id: int, message: Message) -> bool:
        """Send one text or binary message; False if it was refused (closed channel, too big, queue full)."""
        return self.sctp.send(stream_id, *encode_message(message))

    def close(self) -> None:
        self.sctp.close()

    def _on_message(self, stream_id: int, ppid: int, payload: bytes) -> None:
        try:
            message = decode_message(ppid, payload)
        except ValueError:  # includes text that is not UTF-8
            self.undecodable += 1
            return
        self.received += 1
        if self.on_message is not None:
            self.on_message(stream_id, message, ppid)
