"""DataPeer: a lean data-only participant (signaling, a send and a receive connection with m=application only),
for tests and benchmarks of the data path."""

from __future__ import annotations

import asyncio
import random

from sfuctl.client.data import DataLink, Message, data_section
from sfuctl.client.offer import RECEIVE_CODECS, OfferSection, connection_offer, parse_answer
from sfuctl.client.signaling import SignalingClient
from sfuctl.rtc.connection import Connection
from sfuctl.rtc.dtls import DtlsCertificate

from .impairment import ImpairmentConfig
from .udp import BotSocket, open_bot_connection


class DataPeer:
    """Joins a room, opens data channels on its send connection and records what its receive connection gets."""

    def __init__(self, signaling: SignalingClient, peer_id: str) -> None:
        self.signaling = signaling
        self.peer_id = peer_id
        self.send: DataLink | None = None
        self.recv: DataLink | None = None
        self.consumers: dict[int, dict] = {}  # stream id -> dataConsumerAdded params
        self.closed_consumers: list[dict] = []
        self.producers: list[dict] = []
        # (stream id, message): the stream's dataConsumerAdded may come after its first messages.
        self.messages: list[tuple[int, Message]] = []
        self._sockets: list[BotSocket] = []
        self._connections: list[Connection] = []

    @classmethod
    async def join(
        cls, url: str, room: str, name: str, loss: float = 0.0, *, send: bool = True, data: bool = True
    ) -> DataPeer:
        """Join `room`; `send` False opens the receive connection only; `data` False offers a recvonly audio
        m-line instead of m=application (the same connections without SCTP, to compare costs)."""
        signaling = await SignalingClient.connect(url)
        joined = await signaling.request("join", room=room, name=name)
        peer = cls(signaling, joined["peerId"])
        signaling.on_notification = peer._on_notification
        if send:
            peer.send = await peer._open("publish", name, loss, data)
        peer.recv = await peer._open("subscribe", name, loss, data)
        if peer.recv is not None:
            peer.recv.on_message = peer._on_message
        return peer

    async def _open(self, method: str, name: str, loss: float, data: bool) -> DataLink | None:
        connected = asyncio.get_running_loop().create_future()

        def on_state(state: str) -> None:
            if state == "connected" and not connected.done():
                connected.set_result(None)

        connection, sock = await open_bot_connection(
            certificate=DtlsCertificate.default(),
            impairment=ImpairmentConfig(loss=loss),
            seed=f"{name}:{method}",
            on_rtp=lambda data: None,
            on_rtcp=lambda data: None,
            on_state=on_state,
        )
        self._sockets.append(sock)
        self._connections.append(connection)
        link = DataLink(connection)
        section = data_section("0") if data else OfferSection("0", "audio", "recvonly", RECEIVE_CODECS["audio"])
        offer = connection_offer(connection, [section], session_id=random.getrandbits(62))
        params = {"subscriptions": {}} if method == "subscribe" else {}
        result = await self.signaling.request(method, sdp=offer, **params)
        answer = parse_answer(result["sdp"])
        connection.set_remote(answer.ice, answer.fingerprints, answer.dtls_role, answer.candidates)  # type: ignore[arg-type]
        await asyncio.wait_for(connected, 10)
        if not data:
            return None
        link.start(answer.media["0"])
        await asyncio.wait_for(link.opened.wait(), 10)
        return link

    def _on_notification(self, method: str, params: dict) -> None:
        if method == "dataConsumerAdded":
            self.consumers[params["streamId"]] = params
        elif method == "dataConsumerClosed":
            self.closed_consumers.append(params)
        elif method == "dataProducerAdded":
            self.producers.append(params["dataProducer"])

    def _on_message(self, stream_id: int, message: Message, ppid: int) -> None:
        self.messages.append((stream_id, message))

    def from_peer(self, peer: DataPeer, label: str | None = None) -> list[Message]:
        """The messages received from `peer`'s data producers (only the one labelled `label` if given)."""
        out = []
        for stream_id, message in self.messages:
            consumer = self.consumers.get(stream_id, {})
            if consumer.get("peerId") == peer.peer_id and label in (None, consumer.get("label")):
                out.append(message)
        return out

    async def close(self) -> None:
        for connection in self._connections:
            connection.close()
        for sock in self._sockets:
            sock.close()
        await self.signaling.close()
