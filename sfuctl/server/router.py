"""Router: one room. It owns the room's producers and tells its peers what comes and goes."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

from .active_speaker import ActiveSpeakerObserver
from .peer import producer_info

if TYPE_CHECKING:
    from .data_producer import DataProducer
    from .peer import Peer
    from .producer import Producer


# Rooms up to this many peers announce each join and leave to every member (peerJoined / peerLeft) and list every
# peer in the join reply. Bigger rooms would cost n frames per join (n^2 for a room filling up): there the joins and
# leaves of an interval go out as one peersChanged per member, with at most this many peers listed.
ANNOUNCED_PEERS = 100


class Router:
    """A room, created on the first join and removed when its last peer leaves."""

    def __init__(self, name: str, on_empty: Callable[[Router], None]) -> None:
        self.name = name
        self.created_at = time.time()
        self.peers: dict[str, Peer] = {}
        self.producers: dict[str, Producer] = {}
        self.data_producers: dict[str, DataProducer] = {}
        self.active_speaker = ActiveSpeakerObserver()
        self._on_empty = on_empty
        self._joined: list[dict] = []  # since the last peersChanged (big rooms)
        self._left: list[str] = []
        self._changes = 0

    def add_peer(self, peer: Peer) -> None:
        if len(self.peers) < ANNOUNCED_PEERS:
            self.broadcast("peerJoined", {"peer": peer.info()})
        else:
            self._changes += 1
            if len(self._joined) < ANNOUNCED_PEERS:
                self._joined.append(peer.info())
        self.peers[peer.id] = peer
        peer.on_close.add(self._on_peer_closed)

    def _on_peer_closed(self, peer: Peer) -> None:
        if self.peers.pop(peer.id, None) is None:
            return
        if len(self.peers) < ANNOUNCED_PEERS:
            self.broadcast("peerLeft", {"peerId": peer.id})
        else:
            self._changes += 1
            if len(self._left) < ANNOUNCED_PEERS:
                self._left.append(peer.id)
        if not self.peers:
            self._on_empty(self)

    def peer_list(self, exclude: Peer | None = None) -> list[dict]:
        """The peers a join reply lists: all of them in a small room, the first ANNOUNCED_PEERS in a big one."""
        listed = []
        for peer in self.peers.values():
            if len(listed) == ANNOUNCED_PEERS:
                break
            if peer is not exclude:
                listed.append(peer.info())
        return listed

    def announce_changes(self) -> None:
        """Once per interval: the joins and leaves of a big room since the last call, as one peersChanged."""
        if not self._changes:
            return
        params = {"joined": self._joined, "left": self._left, "changes": self._changes, "peerCount": len(self.peers)}
        self._joined, self._left, self._changes = [], [], 0
        self.broadcast("peersChanged", params)

    def add_producer(self, producer: Producer) -> None:
        self.producers[producer.id] = producer
        producer.on_close.add(self._on_producer_closed)
        self.broadcast("producerAdded", {"producer": producer_info(producer)}, exclude=producer.peer)

    def _on_producer_closed(self, producer: Producer) -> None:
        """A producer closed (its consumers first, their peers told): the room hears."""
        if self.producers.pop(producer.id, None) is None:
            return
        self.broadcast("producerClosed", {"producerId": producer.id, "peerId": producer.peer_id}, exclude=producer.peer)

    def add_data_producer(self, data_producer: DataProducer) -> None:
        """Every other peer gets a DataConsumer of it (now, or when its receive association opens)."""
        self.data_producers[data_producer.id] = data_producer
        for peer in list(self.peers.values()):
            if peer is not data_producer.peer:
                peer.consume_data(data_producer)

    def close_data_producer(self, data_producer: DataProducer) -> None:
        """Close a data producer and its consumers; each consumer's peer is told (dataConsumerClosed)."""
        if self.data_producers.pop(data_producer.id, None) is None:
            return
        for data_consumer in list(data_producer.consumers):
            data_consumer.peer.on_data_producer_closed(data_consumer)
        data_producer.close()
        data_producer.peer.forget_data_producer(data_producer)

    def set_producer_paused(self, producer: Producer, paused: bool) -> None:
        producer.set_paused(paused, time.monotonic())
        self.broadcast("producerPaused" if paused else "producerResumed", {"producerId": producer.id}, exclude=producer.peer)

    def observe_speech(self) -> None:
        """One active-speaker step (every active_speaker.STEP): the audio producers' speech shares in; the room
        hears `activeSpeaker` when the floor changes hands. A peer counts by its audio with levels."""
        speech: dict[str, float] = {}
        for producer in self.producers.values():
            if producer.audio_level_id is not None:
                share = producer.take_speech_share()
                speech[producer.peer.id] = max(share, speech.get(producer.peer.id, 0.0))
        before = self.active_speaker.dominant
        winner = self.active_speaker.update(speech)
        if winner is not None:
            self.broadcast("activeSpeaker", {"peerId": winner})
        elif before is not None and self.active_speaker.dominant is None:
            self.broadcast("activeSpeaker", {"peerId": None})

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
            "active_speaker": self.active_speaker.dominant,
            "data_producers": [d.stats() for d in self.data_producers.values()],
            "data_consumers": [d.stats() for peer in self.peers.values() for d in peer.data_consumers.values()],
        }
