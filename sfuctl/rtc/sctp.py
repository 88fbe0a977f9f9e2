"""SCTP over a Connection's DTLS (RFC 8261), carrying WebRTC data channels (RFC 8831/8832).

aiortc's pure-Python SCTP state machine does the protocol (INIT/COOKIE, SACK, retransmission, partial
reliability, stream reset). It talks to its DTLS transport through a small interface, given here by
`_DtlsLink` over sfuctl's own DTLS; its data-channel layer is replaced by `SctpAssociation`, which deals in
(stream id, PPID, payload) and never decodes a message, so a relay passes messages through untouched.

sfuctl's datagram path is synchronous. Every coroutine of the SCTP machine awaits only `_send_data`, which
here never suspends, so `_drive` runs them to completion at once: no task per packet. aiortc's own timers
(T1/T3 retransmission, reconfiguration) still schedule tasks, only when they fire.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from aiortc.rtcsctptransport import RTCSctpCapabilities, RTCSctpTransport

from .connection import Connection
from .dcep import ACK, MESSAGE_ACK, MESSAGE_OPEN, MESSAGE_PPIDS, PPID_DCEP, ChannelParameters
from .sdp import SCTP_PORT

log = logging.getLogger(__name__)

# What sfuctl advertises in a=max-message-size unless configured: browsers' common default.
DEFAULT_MAX_MESSAGE_SIZE = 65536
# DATA chunks (~1.2 kB each) queued for a slow receiver before new messages to it are dropped: ~1.2 MB.
MAX_QUEUED_CHUNKS = 1024
MAX_STREAM_ID = 65534


def _drive(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine of the SCTP machine to its end now; it never suspends over a `_DtlsLink`."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    raise RuntimeError("an SCTP coroutine suspended; its DTLS link must send synchronously")


class _DtlsLink:
    """The part of aiortc's RTCDtlsTransport its SCTP uses, over a Connection."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._receiver: Any = None

    @property
    def state(self) -> str:
        return self.connection.state

    @property
    def _role(self) -> str | None:
        return self.connection.dtls_role

    def _register_data_receiver(self, receiver: Any) -> None:
        self._receiver = receiver

    def _unregister_data_receiver(self, receiver: Any) -> None:
        if self._receiver is receiver:
            self._receiver = None

    async def _send_data(self, data: bytes) -> None:
        self.connection.send_data(data)


class _Stream:
    """One data channel's stream, in the shape aiortc's stream-reset code expects of a channel."""

    negotiated = False

    def __init__(self, stream_id: int, parameters: ChannelParameters, on_closed: Callable[[int], None]) -> None:
        self.id = stream_id
        self.parameters = parameters
        self.readyState = "open"
        self._on_closed = on_closed

    def _setReadyState(self, state: str) -> None:
        if state == self.readyState:
            return
        self.readyState = state
        if state == "closed":
            self._on_closed(self.id)


class _Machine(RTCSctpTransport):
    """aiortc's SCTP with its upper layer handed to an SctpAssociation."""

    def __init__(self, link: _DtlsLink, owner: SctpAssociation) -> None:
        super().__init__(link)  # type: ignore[arg-type]
        self._owner = owner
        self._sack_pending = False

    async def _data_channel_receive(self, stream_id: int, pp_id: int, data: bytes) -> None:
        self._owner._receive(stream_id, pp_id, data)

    async def _send_sack(self) -> None:
        """One SACK for all the packets read in one turn of the event loop, not one per packet (RFC 9260
        section 6.2 allows delaying it up to 200 ms; this delays it only until the socket's queue is read)."""
        if not self._sack_pending:
            self._sack_pending = True
            self._loop.call_soon(self._flush_sack)

    def _flush_sack(self) -> None:
        self._sack_pending = False
        if self._sack_needed and self._association_state != self.State.CLOSED:
            self._owner._run(super()._send_sack())

    def _set_state(self, state: RTCSctpTransport.State) -> None:
        super()._set_state(state)
        self._owner._on_machine_state(self.state)


class SctpAssociation:
    """An SCTP association over a connected Connection, with the data channels on it.

    Callbacks: `on_open()` once established; `on_channel(stream_id, parameters)` when the remote opens a
    channel (DCEP OPEN, acknowledged here); `on_message(stream_id, ppid, payload)` for each message of a known
    channel; `on_channel_closed(stream_id)` when a channel's stream is reset or the association ends.
    Streams this end opens take its RFC 8832 parity: even as DTLS client, odd as DTLS server.
    """

    def __init__(
        self,
        connection: Connection,
        *,
        on_open: Callable[[], None] | None = None,
        on_channel: Callable[[int, ChannelParameters], None] | None = None,
        on_message: Callable[[int, int, bytes], None] | None = None,
        on_channel_closed: Callable[[int], None] | None = None,
    ) -> None:
        self.connection = connection
        self.on_open = on_open
        self.on_channel = on_channel
        self.on_message = on_message
        self.on_channel_closed = on_channel_closed
        self.state = "new"
        self.invalid_messages = 0
        self.errors = 0
        self._link = _DtlsLink(connection)
        self._machine = _Machine(self._link, self)
        # The machine's own channel map, so that its stream-reset code finds and closes our streams.
        self.streams: dict[int, _Stream] = self._machine._data_channels  # type: ignore[assignment]

    @property
    def is_client(self) -> bool:
        return self.connection.dtls_role == "client"

    @property
    def remote_max_message_size(self) -> int:
        return self._machine._remote_max_message_size

    def start(self, remote_port: int = SCTP_PORT, remote_max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        """Begin the association once DTLS is connected (both ends send INIT, RFC 8841 section 9.3)."""
        if self.state != "new":
            return
        self.state = "connecting"
        self.connection.on_data = self.handle_data
        caps = RTCSctpCapabilities(maxMessageSize=remote_max_message_size)
        self._run(self._machine.start(caps, remote_port))

    def handle_data(self, data: bytes) -> None:
        """One SCTP packet from DTLS; a malformed or hostile one is dropped (and counted if it breaks a rule)."""
        if self.state in ("connecting", "open"):
            self._run(self._machine._handle_data(data))

    def open_channel(self, parameters: ChannelParameters) -> int:
        """Announce a channel (DCEP OPEN) on the next free stream id of this end's parity; returns the id."""
        if self.state != "open":
            raise RuntimeError("the SCTP association is not established")
        stream_id = 0 if self.is_client else 1
        while stream_id in self.streams:
            stream_id += 2
        if stream_id > MAX_STREAM_ID:
            raise RuntimeError("no free SCTP stream id")
        self.streams[stream_id] = _Stream(stream_id, parameters, self._stream_closed)
        self._run(self._machine._send(stream_id, PPID_DCEP, bytes(parameters)))
        return stream_id

    def send(self, stream_id: int, ppid: int, payload: bytes) -> bool:
        """Queue one message on a channel with its reliability; False (dropped) if the channel is not open,
        the message exceeds the remote's max-message-size, or too much already waits for the remote."""
        stream = self.streams.get(stream_id)
        if self.state != "open" or stream is None or stream.readyState != "open":
            return False
        limit = self.remote_max_message_size
        if (limit and len(payload) > limit) or len(self._machine._outbound_queue) > MAX_QUEUED_CHUNKS:
            return False
        p = stream.parameters
        expiry = None
        if p.max_packet_lifetime is not None:
            expiry = time.time() + p.max_packet_lifetime / 1000  # the machine compares with time.time()
        self._run(self._machine._send(stream_id, ppid, payload, expiry, p.max_retransmits, p.ordered))
        return True

    def close_channel(self, stream_id: int) -> None:
        """Close a channel: reset its stream (RFC 8831 section 6.7); on_channel_closed follows."""
        stream = self.streams.get(stream_id)
        if stream is not None and self.state == "open":
            self._machine._data_channel_close(stream)  # type: ignore[arg-type]
        elif stream is not None:
            stream._setReadyState("closed")

    def close(self) -> None:
        """Abort the association (if started) and forget every channel; idempotent."""
        if self.state == "closed":
            return
        if self.state != "new":
            self._run(self._machine.stop())
        self._on_machine_state("closed")

    def queued_chunks(self) -> int:
        """DATA chunks waiting to be sent or acknowledged."""
        return len(self._machine._outbound_queue) + len(self._machine._sent_queue)

    # -- from the SCTP machine ---------------------------------------------------------------------------
    def _run(self, coroutine: Coroutine[Any, Any, None]) -> None:
        try:
            _drive(coroutine)
        except Exception:  # hostile input must not break the caller's datagram path
            self.errors += 1
            log.debug("SCTP error", exc_info=True)

    def _receive(self, stream_id: int, ppid: int, payload: bytes) -> None:
        if ppid == PPID_DCEP:
            self._receive_dcep(stream_id, payload)
            return
        stream = self.streams.get(stream_id)
        if ppid not in MESSAGE_PPIDS or stream is None or stream.readyState != "open":
            self.invalid_messages += 1
            return
        if self.on_message is not None:
            self.on_message(stream_id, ppid, payload)

    def _receive_dcep(self, stream_id: int, payload: bytes) -> None:
        kind = payload[0] if payload else None
        if kind == MESSAGE_ACK and stream_id in self.streams:
            return
        if kind != MESSAGE_OPEN or stream_id in self.streams or stream_id % 2 == (0 if self.is_client else 1):
            # An ACK for nothing, an OPEN for a stream in use or of our own parity: refused, nothing changes.
            self.invalid_messages += 1
            return
        try:
            parameters = ChannelParameters.parse(payload)
        except ValueError:
            self.invalid_messages += 1
            return
        self.streams[stream_id] = _Stream(stream_id, parameters, self._stream_closed)
        self._run(self._machine._send(stream_id, PPID_DCEP, ACK))
        if self.on_channel is not None:
            self.on_channel(stream_id, parameters)

    def _stream_closed(self, stream_id: int) -> None:
        """A stream went "closed" (once per stream): forget it and tell the owner."""
        self.streams.pop(stream_id, None)
        if self.on_channel_closed is not None:
            self.on_channel_closed(stream_id)

    def _on_machine_state(self, state: str) -> None:
        if state == "connected" and self.state == "connecting":
            self.state = "open"
            if self.on_open is not None:
                self.on_open()
        elif state == "closed" and self.state != "closed":
            self.state = "closed"
            self.connection.on_data = None
            for stream in list(self.streams.values()):
                stream._setReadyState("closed")
