"""Router: one room. It owns the room's producers and tells its peers what comes and goes."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

from .peer import producer_info

if TYPE_CHECKING:
    from .peer import Peer
    from .producer import Producer


class Router:
    """A room, created on the first join and removed when its last peer leaves."""

    def __init__(self, name: str, on_empty: Callable[[Router], None]) -> None:
        self.name = name
        self.created_at = time.time()
        self.peers: dict[str, Peer] = {}
        self.producers: dict[str, Producer] = {}
        self._on_empty = on_empty

    def add_peer(self, peer: Peer) -> None:
        self.broadcast("peerJoined", {"peer": peer.info()})
        self.peers[peer.id] = peer
        peer.on_close.add(self._on_peer_closed)

    def _on_peer_closed(self, peer: Peer) -> None:
        if self.peers.pop(peer.id, None) is None:
            return
        self.broadcast("peerLeft", {"peerId": peer.id})
        if not self.peers:
            self._on_empty(self)

    def add_producer(self, producer: Producer) -> None:
        self.producers[producer.id] = producer
        producer.on_close.add(self._on_producer_closed)
        self.broadcast("producerAdded", {"producer": producer_info(producer)}, exclude=producer.peer)

    def _on_producer_closed(self, producer: Producer) -> None:
        """A producer closed (its consumers first, their peers told): the room hears."""
        if self.producers.pop(producer.id, None) is None:
            return
        self.broadcast("producerClosed", {"producerId": producer.id, "peerId": producer.peer_id}, exclude=producer.peer)

    def set_producer_paused(self, producer: Producer, paused: bool) -> None:
        producer.set_paused(paused, time.monotonic())
        self.broadcast("producerPaused" if paused else "producerResumed", {"producerId": producer.id}, exclude=producer.peer)

    def broadcast(self, method: str, params: dict, exclude: Peer | None = None) -> None:
        for peer in self.peers.values():
            if peer is not exclude:
                peer.notify(method, params)

    def close(self) -> None:
        for peer in list(self.peers.values()):
            peer.close("server shutting down")

    def stats(self) -> dict:
        producers = [p.stats() for p in self.producers.values()]
        consumers = [c.stats() for peer in self.peers.values() for c in peer.consumers.values()]
        return {
            "name": self.name,
            "peers": [peer.stats() for peer in self.peers.values()],
            "producers": producers,
            "consumers": consumers,
        }
