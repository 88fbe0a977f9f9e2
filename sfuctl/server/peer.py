"""Peer: one participant of a room, with send transports (its producers) and receive transports (its consumers).

A bundled offer (every browser, the bots) needs one transport per direction; an offer without BUNDLE (webrtcbin's
bundle-policy=none) one per m-line, each with its own ICE credentials, DTLS and SRTP, as mediasoup opens a
WebRtcTransport per m-line. The first transport of a direction carries the BUNDLE group and the data channels.
An m-line stays on its transport across renegotiations.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Collection
from dataclasses import replace
from typing import TYPE_CHECKING, Callable

from ..rtc.dcep import ChannelParameters
from ..rtc.dtls import normalize_fingerprints
from ..rtc.sdp import (
    AUDIO_LEVEL_URI,
    MID_URI,
    Codec,
    MediaAnswer,
    MediaOffer,
    Offer,
    TRANSPORT_CC_URI,
    accepted_extensions,
    announce_probe,
    answer_direction,
    choose_codec,
    parse_offer,
)
from ..rtc.simulcast import RID_URI
from .auth import OPEN, Grant
from .consumer import Consumer
from .data_consumer import DataConsumer
from .data_producer import DataProducer
from .errors import bad_request, not_found, wrong_state
from .events import CloseListeners
from .producer import Producer
from .quotas import check
from .rate_limit import TokenBucket
from .simulcast_consumer import SimulcastConsumer
from .simulcast_producer import SimulcastProducer
from .transport import Transport

if TYPE_CHECKING:
    from .router import Router
    from .worker import Worker

log = logging.getLogger(__name__)

Notify = Callable[[str, dict], None]
# Why a consumer closed: the peer asked (unsubscribe, renegotiation, leaving: it is not told) or its connection
# ended (it is told: consumerClosed).
UNSUBSCRIBED = "unsubscribed"
TRANSPORT_CLOSED = "transport closed"


def new_id(prefix: str) -> str:
    """A short unique id such as 'p-3f9a1c2e' (the prefix says what it names)."""
    return f"{prefix}-{secrets.token_hex(4)}"


class Peer:
    """A participant; everything it owns closes with it."""

    def __init__(
        self, *, name: str, router: Router, worker: Worker, notify: Notify, on_closed: Callable[[], None], grant: Grant = OPEN
    ) -> None:
        self.id = grant.identity or new_id("peer")
        self.name = name
        self.grant = grant  # what its access token allows (auth.py); OPEN on an open server
        self.cname = self.id
        self.router = router
        self.worker = worker
        self.notify = notify
        self.joined_at = time.time()
        self.closed = False
        self.send_transports: list[Transport] = []  # in the order of the last offer's transports
        self.recv_transports: list[Transport] = []
        self.producers: dict[str, Producer] = {}
        self.consumers: dict[str, Consumer] = {}
        self.on_close: CloseListeners[Peer] = CloseListeners()  # its router listens
        self.data_producers: dict[str, DataProducer] = {}
        self.data_consumers: dict[str, DataConsumer] = {}
        # One message budget for all of this peer's data channels.
        rate = worker.config.data_rate_limit
        self.data_rate = TokenBucket(rate, max(1.0, rate), time.monotonic())
        self._on_closed = on_closed

    def info(self) -> dict:
        return {"id": self.id, "name": self.name}

    @property
    def send_transport(self) -> Transport | None:
        """The first send transport: the BUNDLE group's (all of them for a bundled client) and the data channels'."""
        return self.send_transports[0] if self.send_transports else None

    @property
    def recv_transport(self) -> Transport | None:
        """The first receive transport: the BUNDLE group's and the data channels'."""
        return self.recv_transports[0] if self.recv_transports else None

    @property
    def transports(self) -> list[Transport]:
        """Every transport of the peer, send ones first."""
        return [*self.send_transports, *self.recv_transports]

    def receive_transport_for(self, mid: str) -> Transport | None:
        """The live receive transport that carries m-line `mid`."""
        return next((t for t in self.recv_transports if mid in t.mids and not t.closed), None)

    # -- publish --------------------------------------------------------------------------------------
    def publish(self, sdp: str) -> dict:
        """Answer the peer's offer for its send transport: each sending m-line becomes a producer."""
        quotas = self.worker.config.quotas
        offer = self.parse(sdp, "producers_per_peer")
        self.grant.require_publishing(offer)
        if offer.application is not None:  # data channels on the send transport become data producers
            self.grant.require("data")
        matched = self._match_transports(offer, self.send_transports, self.recv_transports)
        transport_cc = self.worker.config.transport_cc
        producers_by_mid = {p.mid: p for p in self.producers.values()}
        plan: list[tuple[MediaAnswer, Producer | None]] = []
        for m in offer.media:
            if m.kind == "application":
                plan.append((self._data_answer(m), None))
                continue
            existing = producers_by_mid.get(m.mid)
            codec = existing.codec if existing else choose_codec(m, transport_cc=transport_cc)
            if m.simulcast is not None and codec is None and not m.rejected:
                raise bad_request(f"mid {m.mid}: the simulcast encodings allow no common codec the server takes (VP8, H264)")
            if m.rejected or codec is None:
                plan.append((MediaAnswer(m, None, "inactive"), existing))
                continue
            direction = answer_direction(m.direction, server_sends=False)
            rids = m.simulcast.rids if m.simulcast is not None else ()
            extensions = accepted_extensions(m, transport_cc=transport_cc)
            plan.append((MediaAnswer(m, codec, direction, extensions=extensions, rids=rids), existing))
        producing = sum(answer.direction == "recvonly" for answer, _ in plan)
        check("producers_per_peer", quotas.producers_per_peer, producing, f"the offer has {producing} tracks to publish")

        old = self.send_transports
        self.send_transports = self._apply_transports(offer, matched)
        carrier = {mid: t for t in self.send_transports for mid in t.mids}
        offered_mids = {m.mid for m in offer.media}
        for producer in [p for p in self.producers.values() if p.mid not in offered_mids]:
            producer.close()
        for answer, existing in plan:
            receiving = answer.direction == "recvonly"
            transport = carrier.get(answer.offer.mid)  # parse_offer gives every accepted m-line one
            if receiving and TRANSPORT_CC_URI in answer.extensions:
                transport.record_arrivals(answer.extensions[TRANSPORT_CC_URI])
            if existing is not None and not receiving:
                existing.close()
            elif existing is None and receiving:
                assert transport is not None
                m = answer.offer
                producer: Producer | SimulcastProducer
                if m.simulcast is not None:
                    producer = SimulcastProducer(
                        id=new_id("p"),
                        peer=self,
                        transport=transport,
                        codec=answer.codec,
                        mid=m.mid,
                        simulcast=m.simulcast,
                        rid_extension_id=answer.extensions.get(RID_URI),
                    )
                else:
                    producer = Producer(
                        id=new_id("p"),
                        peer=self,
                        transport=transport,
                        kind=m.kind,
                        codec=answer.codec,
                        ssrc=m.ssrc,
                        mid=m.mid,
                        audio_level_id=answer.extensions.get(AUDIO_LEVEL_URI),
                    )
                transport.add_producer(producer, answer.extensions.get(MID_URI))
                self.producers[producer.id] = producer
                producer.on_close.add(self._on_producer_closed)
                self.router.add_producer(producer)
        self._drop_transports(old, self.send_transports)
        return {
            "sdp": self._answer(self.send_transports, [a for a, _ in plan], offer.bundle),
            "producers": [producer_info(p) for t in self.send_transports for p in t.producers_by_mid.values()],
        }

    # -- subscribe ------------------------------------------------------------------------------------
    def subscribe(self, sdp: str, subscriptions: dict, waiting: Collection[str] = ()) -> dict:
        """Answer the peer's offer for its receive transport; `subscriptions` maps m-line mids to producer ids.

        m-lines in `waiting` without a subscription are answered sendonly with no stream yet: `consume` fills
        them later (WHEP sessions, whose offer cannot name producers that do not exist yet).
        """
        self.grant.require("subscribe")
        offer = self.parse(sdp, "consumers_per_peer")
        self._check_subscriptions(offer, subscriptions)
        matched = self._match_transports(offer, self.recv_transports, self.send_transports)
        old = self.recv_transports
        self.recv_transports = self._apply_transports(offer, matched)
        carrier = {mid: t for t in self.recv_transports for mid in t.mids}
        consumers_by_mid = {c.mid: c for c in self.consumers.values()}
        rejected: list[dict] = []
        answers = [
            self._data_answer(m)
            if m.kind == "application"
            else self._consume(
                carrier.get(m.mid), consumers_by_mid.get(m.mid), m,
                self.router.producers.get(subscriptions.get(m.mid, "")), rejected, m.mid in waiting,
            )
            for m in offer.media
        ]
        self._drop_transports(old, self.recv_transports)
        return {
            "sdp": self._answer(self.recv_transports, answers, offer.bundle),
            "consumers": [consumer_info(c) for t in self.recv_transports for c in t.consumers_by_mid.values()],
            "rejected": rejected,
            "probeSsrc": self.recv_transports[0].probe_ssrc if self.recv_transports else None,
        }

    def _check_subscriptions(self, offer: Offer, subscriptions: object) -> None:
        """Raise (before anything changes) unless every subscription names an m-line and a producer of its kind."""
        if not isinstance(subscriptions, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in subscriptions.items()
        ):
            raise bad_request("'subscriptions' must be an object mapping mid -> producerId")
        limit = self.worker.config.quotas.consumers_per_peer
        check("consumers_per_peer", limit, len(subscriptions), f"{len(subscriptions)} subscriptions asked for")
        current = sum(len(t.consumers_by_mid) for t in self.recv_transports)
        self.worker.check_consumers(len(subscriptions) - current)
        by_mid = {m.mid: m for m in offer.media}
        for mid, producer_id in subscriptions.items():
            m = by_mid.get(mid)
            if m is None:
                raise bad_request(f"subscription names mid {mid!r}, which the offer has no m-line for")
            producer = self.router.producers.get(producer_id)
            if producer is None:
                raise not_found("producer", producer_id)
            if producer.kind != m.kind:
                raise bad_request(f"mid {mid!r} is {m.kind} but producer {producer_id} is {producer.kind}")

    def _match_transports(self, offer: Offer, current: list[Transport], others: list[Transport]) -> list[Transport | None]:
        """The transport of `current` each of the offer's transports goes on with (None: a new one). Raises before
        anything changes when the offer moves an m-line to another transport, takes the peer over its transports
        quota, or restarts ICE where it cannot."""
        matched: list[Transport | None] = []
        for part in offer.transports:
            owners = list(dict.fromkeys(t for t in current for mid in part.mids if mid in t.mids))
            if not part.mids and current and len(offer.transports) == 1:  # every m-line rejected: the ICE session goes on
                owners = current[:1]
            owner = owners[0] if owners else None
            if len(owners) > 1 or (owner is not None and owner in matched):
                # the first of its m-lines that another transport carries, or that another part already took
                moved = next(mid for mid in part.mids if any(mid in t.mids for t in owners[1:] or owners))
                raise bad_request(
                    f"the offer moves m-line {moved!r} to another transport (BUNDLE group changed): an m-line keeps "
                    "its transport across renegotiations; offer the new grouping on a new connection"
                )
            matched.append(owner)
        count = len(others) + len(offer.transports)
        check("transports_per_peer", self.worker.config.quotas.transports_per_peer, count,
              f"the offer asks for {len(offer.transports)} transports (m-lines outside a BUNDLE group take one each)")
        for part, owner in zip(offer.transports, matched):
            if owner is not None:
                owner.check_offer(part)
        return matched

    def _apply_transports(self, offer: Offer, matched: list[Transport | None]) -> list[Transport]:
        """The offer's transports, in its order, with their parts of it applied: new ones opened for None."""
        transports: list[Transport] = []
        try:
            for index, (part, owner) in enumerate(zip(offer.transports, matched)):
                transport = owner or self._create_transport()
                transports.append(transport)
                transport.apply_offer(part, offer.application if index == 0 else None)
        except Exception:
            for transport in transports:
                if transport not in matched:
                    transport.close()
            raise
        return transports

    def _drop_transports(self, old: list[Transport], kept: list[Transport]) -> None:
        """Close the transports of `old` the last offer no longer uses (all their m-lines rejected or gone)."""
        for transport in old:
            if transport not in kept:
                self._on_transport_closed(transport, "closed")

    @staticmethod
    def _answer(transports: list[Transport], media: list[MediaAnswer], bundle: tuple[str, ...] | None) -> str:
        """The answer to an offer carried by `transports`: an m-line on any but the first names its own."""
        first = transports[0]
        own = {mid: (t.connection.local_ice, t.setup) for t in transports[1:] for mid in t.mids}
        media = [replace(m, transport=own[m.offer.mid]) if m.accepted and m.offer.mid in own else m for m in media]
        for transport in transports:
            transport.answered(media)
            if transport.probe_ssrc is not None:
                media = announce_probe(media, transport.mids, transport.probe_ssrc)
        return first.answer(media, bundle)

    def _consume(
        self,
        transport: Transport | None,
        consumer: Consumer | None,
        m: MediaOffer,
        producer: Producer | None,
        rejected: list[dict],
        waiting: bool = False,
    ) -> MediaAnswer:
        """One m-line of a receive offer (on `transport`, None for a rejected one, with its `consumer` so far): keep,
        replace, open or close its consumer; its answer.

        A producer the offer offers no codec of is added to `rejected`; a `waiting` m-line without a producer is
        answered sendonly, for `consume` to fill later.
        """
        receiving = answer_direction(m.direction, server_sends=True) == "sendonly"
        if consumer is not None and (producer is not consumer.producer or not receiving or m.rejected
                                     or consumer.transport is not transport):
            consumer.close(UNSUBSCRIBED)
            consumer = None
        # REMB is answered only where the server sends simulcast: it lets a browser's estimate cap the layer choice.
        remb = (("goog-remb", None),) if isinstance(producer, SimulcastProducer) else ()
        transport_cc = self.worker.config.transport_cc
        codec = choose_codec(m, producer.codec.name if producer else None, remb, transport_cc=transport_cc)
        extensions = accepted_extensions(m, transport_cc=transport_cc)
        if producer is None and waiting and receiving and not m.rejected and codec is not None:
            return MediaAnswer(m, codec, "sendonly", extensions=extensions)
        if producer is None or not receiving or m.rejected or codec is None:
            if producer is not None and codec is None:
                rejected.append({"mid": m.mid, "producerId": producer.id, "reason": f"no {producer.codec.name} codec offered"})
            return MediaAnswer(m, None if m.rejected else codec, "inactive")
        if consumer is None:
            consumer = self.consume(m, producer, codec)
        return MediaAnswer(
            m,
            consumer.codec,
            "sendonly",
            ssrc=consumer.ssrc,
            cname=producer.cname,
            msid=(producer.peer_id, producer.id),
            extensions=extensions,
        )

    def consume(self, m: MediaOffer, producer: Producer | SimulcastProducer, codec: Codec) -> Consumer:
        """A consumer of `producer` on the receive transport's answered m-line `m`, sending with `codec`."""
        transport = self.receive_transport_for(m.mid)
        if transport is None:
            raise wrong_state(f"the peer has no receive connection for m-line {m.mid!r}")
        kind = SimulcastConsumer if isinstance(producer, SimulcastProducer) else Consumer
        consumer = kind(
            id=new_id("c"),
            peer=self,
            producer=producer,
            transport=transport,
            codec=codec,
            mid=m.mid,
            extensions=accepted_extensions(m, transport_cc=self.worker.config.transport_cc),
        )
        self.consumers[consumer.id] = consumer
        consumer.on_close.add(self._on_consumer_closed)
        producer.add_consumer(consumer)
        transport.add_consumer(consumer)
        return consumer

    # -- data channels (transport DataEvents) ----------------------------------------------------------
    def on_data_open(self, transport: Transport) -> None:
        """An association is up: on the receive transport, consume every other peer's data producer."""
        if transport is self.recv_transport:
            for data_producer in list(self.router.data_producers.values()):
                self.consume_data(data_producer)

    def on_data_channel(self, transport: Transport, stream_id: int, parameters: ChannelParameters) -> None:
        """The peer opened a channel: on its send transport it becomes a DataProducer; elsewhere it is closed."""
        if transport is not self.send_transport or self.closed:
            assert transport.sctp is not None
            transport.sctp.close_channel(stream_id)
            return
        data_producer = DataProducer(
            id=new_id("dp"),
            peer=self,
            transport=transport,
            stream_id=stream_id,
            parameters=parameters,
            max_message_size=self.worker.config.data_max_message_size,
            rate=self.data_rate,
        )
        transport.data_producers[stream_id] = data_producer
        self.data_producers[data_producer.id] = data_producer
        self.notify("dataProducerAdded", {"dataProducer": data_producer.info()})
        self.router.add_data_producer(data_producer)

    def on_data_channel_closed(self, transport: Transport, stream_id: int) -> None:
        data_producer = transport.data_producers.get(stream_id)
        if data_producer is not None:
            self.router.close_data_producer(data_producer)
        data_consumer = transport.data_consumers.get(stream_id)
        if data_consumer is not None:
            self._close_data_consumer(data_consumer, notify=True)

    def consume_data(self, data_producer: DataProducer) -> None:
        """Open a channel for `data_producer` on the receive transport (once its association is up)."""
        transport = self.recv_transport
        sctp = transport.sctp if transport is not None else None
        if transport is None or sctp is None or sctp.state != "open" or self.closed or data_producer.peer is self:
            return
        stream_id = sctp.open_channel(data_producer.parameters)
        data_consumer = DataConsumer(id=new_id("dc"), peer=self, data_producer=data_producer, sctp=sctp, stream_id=stream_id)
        transport.data_consumers[stream_id] = data_consumer
        self.data_consumers[data_consumer.id] = data_consumer
        data_producer.add_consumer(data_consumer)
        self.notify("dataConsumerAdded", data_consumer.info())

    def on_data_producer_closed(self, data_consumer: DataConsumer) -> None:
        self._close_data_consumer(data_consumer, notify=True)

    def forget_data_producer(self, data_producer: DataProducer) -> None:
        self.data_producers.pop(data_producer.id, None)
        if data_producer.transport.data_producers.get(data_producer.stream_id) is data_producer:
            del data_producer.transport.data_producers[data_producer.stream_id]

    def _close_data_consumer(self, data_consumer: DataConsumer, notify: bool) -> None:
        if data_consumer.closed:
            return
        self.data_consumers.pop(data_consumer.id, None)
        transport = self.recv_transport
        if transport is not None and transport.data_consumers.get(data_consumer.stream_id) is data_consumer:
            del transport.data_consumers[data_consumer.stream_id]
        data_consumer.close()
        if notify and not self.closed:
            self.notify(
                "dataConsumerClosed", {"dataConsumerId": data_consumer.id, "dataProducerId": data_consumer.data_producer.id}
            )

    def _data_answer(self, m: MediaOffer) -> MediaAnswer:
        """Accept an m=application section (data channels) with the server's max-message-size."""
        if m.rejected:
            return MediaAnswer(m, None, "inactive")
        return MediaAnswer(m, None, "sendrecv", max_message_size=self.worker.config.data_max_message_size)

    # -- control --------------------------------------------------------------------------------------
    def consumer(self, consumer_id: object) -> Consumer:
        consumer = self.consumers.get(consumer_id) if isinstance(consumer_id, str) else None
        if consumer is None:
            raise not_found("consumer", consumer_id)
        return consumer

    def producer(self, producer_id: object) -> Producer:
        producer = self.producers.get(producer_id) if isinstance(producer_id, str) else None
        if producer is None:
            raise not_found("producer", producer_id)
        return producer

    def close_data_producer(self, data_producer_id: object) -> None:
        """Close one of this peer's data channels: its stream is reset (the peer's channel closes) and every
        DataConsumer of it closes with `dataConsumerClosed`."""
        data_producer = self.data_producers.get(data_producer_id) if isinstance(data_producer_id, str) else None
        if data_producer is None:
            raise not_found("data producer", data_producer_id)
        sctp = data_producer.transport.sctp
        if sctp is not None:
            sctp.close_channel(data_producer.stream_id)
        self.router.close_data_producer(data_producer)

    def unsubscribe(self, consumer_id: object) -> None:
        self.consumer(consumer_id).close(UNSUBSCRIBED)

    def close(self, reason: str = "left") -> None:
        """Idempotent: close consumers, producers (the room hears) and transports, then tell the owners."""
        if self.closed:
            return
        self.closed = True
        log.info("peer %s (%s) closed: %s", self.id, self.name, reason)
        for consumer in list(self.consumers.values()):
            consumer.close(UNSUBSCRIBED)
        for producer in list(self.producers.values()):
            producer.close()
        for data_consumer in list(self.data_consumers.values()):
            self._close_data_consumer(data_consumer, notify=False)
        for data_producer in list(self.data_producers.values()):
            self.router.close_data_producer(data_producer)
        for transport in self.transports:
            transport.close()
        self.on_close.emit(self)
        self._on_closed()

    def stats(self) -> dict:
        return {
            **self.info(),
            "worker": self.worker.index,
            "transports": [t.stats() for t in self.transports],
        }

    def _on_consumer_closed(self, consumer: Consumer) -> None:
        """Forget a closed consumer; the peer is told unless it asked for the close itself."""
        self.consumers.pop(consumer.id, None)
        if consumer.close_reason != UNSUBSCRIBED and not self.closed:
            self.notify("consumerClosed", {"consumerId": consumer.id, "producerId": consumer.producer.id, "mid": consumer.mid})

    def _on_producer_closed(self, producer: Producer) -> None:
        self.producers.pop(producer.id, None)

    def parse(self, sdp: object, quota: str) -> Offer:
        """Parse an offer from this peer; SignalingError says what is wrong. `quota` (producers_per_peer or
        consumers_per_peer) bounds its m-lines, counted before parsing."""
        if self.closed:
            raise wrong_state("the peer has left the room")
        if not isinstance(sdp, str):
            raise bad_request("'sdp' must be the SDP offer as a string")
        lines = sdp.count("\nm=")
        check(quota, getattr(self.worker.config.quotas, quota), lines, f"the offer has {lines} m-lines")
        try:
            offer = parse_offer(sdp)
            for part in offer.transports:
                normalize_fingerprints(part.fingerprints)  # DTLS must be able to check the peer's certificate
        except ValueError as exc:
            raise bad_request(f"invalid SDP offer: {exc}") from None
        return offer

    def _create_transport(self) -> Transport:
        return Transport(
            id=new_id("t"), worker=self.worker, cname=self.cname, on_closed=self._on_transport_closed, data_events=self
        )

    def _on_transport_closed(self, transport: Transport, state: str) -> None:
        """One connection ended: its producers and consumers go with it; the next offer opens a new one.

        The peer itself goes only when a connection failed (consent expired: the peer vanished) and it has no
        other live connection; a peer that closed one connection on purpose stays in the room.
        """
        for consumer in list(transport.consumers.values()):
            consumer.close(TRANSPORT_CLOSED)
        for producer in list(transport.producers_by_mid.values()):
            producer.close()
        for data_consumer in list(transport.data_consumers.values()):
            self._close_data_consumer(data_consumer, notify=True)
        for data_producer in list(transport.data_producers.values()):
            self.router.close_data_producer(data_producer)
        transport.close()
        for transports in (self.send_transports, self.recv_transports):
            if transport in transports:
                transports.remove(transport)
        others = [t for t in self.transports if not t.closed]
        if state == "failed" and others:
            log.warning("peer %s: the transport of m-lines %s failed; its other transports go on", self.id, ", ".join(transport.mids))
        if state == "failed" and not others:
            self.close("connection lost (ICE consent expired)")


def producer_info(p: Producer | SimulcastProducer) -> dict:
    layers = len(p.layers) if isinstance(p, SimulcastProducer) else 1
    return {
        "id": p.id,
        "peerId": p.peer_id,
        "peerName": p.peer_name,
        "kind": p.kind,
        "codec": p.codec.name,
        "mid": p.mid,
        "paused": p.paused,
        "spatialLayers": layers,
    }


def consumer_info(c: Consumer) -> dict:
    return {
        "id": c.id,
        "producerId": c.producer.id,
        "peerId": c.producer.peer_id,
        "kind": c.kind,
        "codec": c.codec.name,
        "mid": c.mid,
        "ssrc": c.ssrc,
        "paused": c.paused,
    }
