"""Router: one room. It owns the room's producers and tells its peers what comes and goes."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

from .active_speaker import ActiveSpeakerObserver
from .peer import producer_info

if TYPE_CHECKING:
    from .data_producer import DataProducer
    from .peer import Peer
    from .pipes import RemotePeer, RoomPipe
    from .producer import Producer


# Rooms up to this many peers announce each join and leave to every member (peerJoined / peerLeft) and list every
# peer in the join reply. Bigger rooms would cost n frames per join (n^2 for a room filling up): there the joins and
# leaves of an interval go out as one peersChanged per member, with at most this many peers listed.
ANNOUNCED_PEERS = 100


class Router:
    """A room, created on the first join and removed when its last peer leaves.

    A room larger than one worker has a router on each worker it spans (docs/architecture.md, "Rooms across
    workers"): its home worker's, with a RoomPipe to each other one, and theirs, with a RoomPipe to the home.
    Producers of the other workers are piped in as local producers; their peers are `remote_peers`.
    """

    def __init__(self, name: str, on_empty: Callable[[Router], None]) -> None:
        self.name = name
        self.created_at = time.time()
        self.peers: dict[str, Peer] = {}
        self.producers: dict[str, Producer] = {}
        self.data_producers: dict[str, DataProducer] = {}
        self.active_speaker = ActiveSpeakerObserver()
        self.remote_peers: dict[str, RemotePeer] = {}  # the room's peers on other workers (added by its pipes)
        self.pipes: list[RoomPipe] = []
        self.home_pipe: RoomPipe | None = None  # on a worker the room spilled to: the pipe to its home worker
        self.emptied = False
        self._on_empty = on_empty
        self._joined: list[dict] = []  # since the last peersChanged (big rooms)
        self._left: list[str] = []
        self._changes = 0

    @property
    def peer_count(self) -> int:
        """Peers of the room on every worker it spans."""
        return len(self.peers) + len(self.remote_peers)

    def add_peer(self, peer: Peer) -> None:
        self._announce_join(peer.info())
        self.peers[peer.id] = peer
        peer.on_close.add(self._on_peer_closed)
        for pipe in self.pipes:
            pipe.peer_joined(peer)

    def _on_peer_closed(self, peer: Peer) -> None:
        if self.peers.pop(peer.id, None) is None:
            return
        self._announce_leave(peer.id)
        for pipe in self.pipes:
            pipe.peer_left(peer.id)
        self._close_if_empty()

    def add_remote_peer(self, peer: RemotePeer, via: RoomPipe) -> None:
        """A peer of the room on another worker, as its pipe `via` tells; the other pipes pass it on."""
        if peer.id in self.remote_peers or peer.id in self.peers:
            return
        self._announce_join(peer.info())
        self.remote_peers[peer.id] = peer
        for pipe in self.pipes:
            if pipe is not via:
                pipe.peer_joined(peer)

    def remove_remote_peer(self, peer_id: str, via: RoomPipe) -> None:
        if self.remote_peers.pop(peer_id, None) is None:
            return
        self._announce_leave(peer_id)
        for pipe in self.pipes:
            if pipe is not via:
                pipe.peer_left(peer_id)
        self._close_if_empty()

    def add_pipe(self, pipe: RoomPipe, home: bool) -> None:
        """A pipe to this room's router on another worker (`home`: the room's home worker)."""
        self.pipes.append(pipe)
        if home:
            self.home_pipe = pipe

    def remove_pipe(self, pipe: RoomPipe) -> None:
        """A pipe closed (its producers and remote peers already gone)."""
        if pipe in self.pipes:
            self.pipes.remove(pipe)
        if self.home_pipe is pipe:
            self.home_pipe = None
        self._close_if_empty()

    def _close_if_empty(self) -> None:
        """The room goes with its last peer here; its home stays while other workers have peers of it."""
        if self.emptied or self.peers or (self.remote_peers and self.home_pipe is None):
            return
        self.emptied = True
        for pipe in list(self.pipes):
            pipe.close("room empty")
        self._on_empty(self)

    def _announce_join(self, info: dict) -> None:
        if self.peer_count < ANNOUNCED_PEERS:
            self.broadcast("peerJoined", {"peer": info})
        else:
            self._changes += 1
            if len(self._joined) < ANNOUNCED_PEERS:
                self._joined.append(info)

    def _announce_leave(self, peer_id: str) -> None:
        if self.peer_count < ANNOUNCED_PEERS:
            self.broadcast("peerLeft", {"peerId": peer_id})
        else:
            self._changes += 1
            if len(self._left) < ANNOUNCED_PEERS:
                self._left.append(peer_id)

    def peer_list(self, exclude: Peer | None = None) -> list[dict]:
        """The peers a join reply lists: all of them in a small room, the first ANNOUNCED_PEERS in a big one."""
        listed = []
        for peer in (*self.peers.values(), *self.remote_peers.values()):
            if len(listed) == ANNOUNCED_PEERS:
                break
            if peer is not exclude:
                listed.append(peer.info())
        return listed

    def announce_changes(self) -> None:
        """Once per interval: the joins and leaves of a big room since the last call, as one peersChanged."""
        if not self._changes:
            return
        params = {"joined": self._joined, "left": self._left, "changes": self._changes, "peerCount": self.peer_count}
        self._joined, self._left, self._changes = [], [], 0
        self.broadcast("peersChanged", params)

    def add_producer(self, producer: Producer) -> None:
        self.producers[producer.id] = producer
        producer.on_close.add(self._on_producer_closed)
        self.broadcast("producerAdded", {"producer": producer_info(producer)}, exclude=producer.peer)
        for pipe in self.pipes:
            pipe.producer_added(producer)

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
        for pipe in self.pipes:
            pipe.data_producer_added(data_producer)

    def close_data_producer(self, data_producer: DataProducer) -> None:
        """Close a data producer and its consumers; each consumer's peer is told (dataConsumerClosed)."""
        if self.data_producers.pop(data_producer.id, None) is None:
            return
        for pipe in self.pipes:
            pipe.data_producer_closed(data_producer)
        for data_consumer in list(data_producer.consumers):
            data_consumer.peer.on_data_producer_closed(data_consumer)
        data_producer.close()
        data_producer.peer.forget_data_producer(data_producer)

    def set_producer_paused(self, producer: Producer, paused: bool) -> None:
        producer.set_paused(paused, time.monotonic())
        self.broadcast("producerPaused" if paused else "producerResumed", {"producerId": producer.id}, exclude=producer.peer)
        for pipe in self.pipes:
            pipe.producer_paused(producer)

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

    def close(self, reason: str = "server shutting down") -> None:
        for peer in list(self.peers.values()):
            peer.close(reason)
        for pipe in list(self.pipes):
            pipe.close(reason)

    def published(self) -> list[Producer]:
        """The room's producers published on this worker (piped copies are their publisher's worker's to report)."""
        if not self.pipes:
            return list(self.producers.values())
        piped = {producer_id for pipe in self.pipes for producer_id in pipe.incoming}
        return [p for p in self.producers.values() if p.id not in piped]

    def stats(self) -> dict:
        producers = [p.stats() for p in self.published()]
        consumers = [c.stats() for peer in self.peers.values() for c in peer.consumers.values()]
        return {
            "name": self.name,
            "peers": [peer.stats() for peer in self.peers.values()],
            "producers": producers,
            "consumers": consumers,
            "active_speaker": self.active_speaker.dominant,
            "data_producers": [d.stats() for d in self.data_producers.values() if not any(d.id in p.incoming_data for p in self.pipes)],
            "data_consumers": [d.stats() for peer in self.peers.values() for d in peer.data_consumers.values()],
        }
