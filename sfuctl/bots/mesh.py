"""A mesh bot: the same call without the SFU's forwarding, for comparing the two (scenarios/mesh.toml).

It joins its room over the server's signaling like any bot, then connects to every other bot of the room
directly: one ICE/DTLS/SRTP connection per pair (a MeshLink), carrying its audio and video to that peer and
the peer's to it. The SDP goes through the server's `relay` method (docs/protocol.md, "Mesh calls"): the
newcomer offers to each peer already in the room as ICE controlling with a=setup:actpass; the peer answers as
ICE-lite and DTLS server (a=setup:passive). Only newcomers offer, so two bots never offer to each other.
A mesh room holds only mesh bots: an offer to anything else is never answered.
"""

from __future__ import annotations

import asyncio
import time

from sfuctl.client.offer import SEND_CODECS, OfferSection, connection_offer, parse_answer
from sfuctl.client.signaling import SignalingError
from sfuctl.rtc.connection import Connection, IceRole
from sfuctl.rtc.sdp import MediaAnswer, Offer, accepted_extensions, build_answer, choose_codec, dtls_role_for, parse_offer

from .bot import Bot, BotEnv, JoinError
from .config import BotPlan
from .link import Link
from .publisher import Publisher, StreamSender
from .subscriber import ConsumerInfo, ConsumerStream, Subscriber

KINDS = ("video", "audio")
# a=direction of an m-line from (this side sends, this side receives)
DIRECTIONS = {(True, True): "sendrecv", (True, False): "sendonly", (False, True): "recvonly", (False, False): "inactive"}


class MeshLink(Link):
    """The link to one other peer: the streams sent to it (its Publisher) and received from it (its Subscriber).

    `ready` resolves True when the connection is up, False when the peer left first, or fails with JoinError.
    """

    def __init__(self, name: str, remote_id: str, remote_name: str, announced_at: float) -> None:
        super().__init__(name)
        self.remote_id = remote_id
        self.remote_name = remote_name
        self.announced_at = announced_at
        self.sections: list[OfferSection] = []  # our offer, when we offered
        self.remote_left = False
        self.ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.ready.add_done_callback(_retrieve)


class MeshBot(Bot):
    """A Bot whose media goes peer to peer; statistics, report and lifecycle are a Bot's."""

    def __init__(self, plan: BotPlan, env: BotEnv) -> None:
        super().__init__(plan, env)
        self._links: dict[str, MeshLink] = {}  # open links by remote peer id
        self._names: dict[str, str] = {}

    # -- joining --------------------------------------------------------------------------------------
    async def _join(self) -> None:
        joined = await self._join_room()
        peers = [p for p in joined.get("peers", []) if isinstance(p, dict) and isinstance(p.get("id"), str)]
        for peer in peers:
            self._names[peer["id"]] = str(peer.get("name", ""))
        self._stage = f"offering to {len(peers)} peers"
        links = await asyncio.gather(*(self._offer(peer["id"]) for peer in peers))
        self._stage = f"connecting to {len(peers)} peers directly (ICE/DTLS)"
        await asyncio.gather(*(link.ready for link in links))
        await self._connect_transports()

    def _open_link(self, remote_id: str) -> MeshLink:
        rtcp_ssrc = self.rng.randint(1, 0xFFFFFFFF)
        link = MeshLink(f"link-{len(self.links) + 1}", remote_id, self._names.get(remote_id, ""), time.monotonic())
        link.subscriber = Subscriber(link.send_rtcp, self.cname, rtcp_ssrc, time.monotonic, link.router)
        self._links[remote_id] = link
        self._add_link(link)
        return link

    async def _connect(self, link: MeshLink, role: IceRole) -> Connection:
        return await self._connect_link(link, lambda state: self._on_link_state(link, state), role)

    async def _offer(self, remote_id: str) -> MeshLink:
        """Offer a connection to a peer that was in the room before us; its answer comes as a notification."""
        link = self._open_link(remote_id)
        conn = await self._connect(link, "controlling")
        sections = []
        for number, kind in enumerate(k for k in KINDS if k in self.env.tracks):
            sends = self.plan.publish
            sections.append(
                OfferSection(
                    mid=str(number),
                    kind=kind,
                    direction=DIRECTIONS[(sends, self.plan.subscribe)],
                    codecs=(SEND_CODECS[self.env.tracks[kind].codec],),
                    ssrc=self.rng.randint(1, 0xFFFFFFFF) if sends else None,
                    cname=self.cname,
                    msid=(self.cname, f"{self.cname}-{kind}") if sends else None,
                )
            )
        link.sections = sections
        offer = connection_offer(conn, sections, session_id=self.rng.getrandbits(62))
        assert self.signaling is not None
        try:
            await self.signaling.request("relay", to=remote_id, data={"type": "offer", "sdp": offer})
        except SignalingError as exc:
            if exc.code != "not_found":
                raise
            link.remote_left = True  # it left between our join and our offer
            link.close()
        return link

    def _on_answer(self, link: MeshLink, sdp: object) -> None:
        """The peer's answer to our offer: start the streams it accepted and connect."""
        conn = link.connection
        if conn is None or conn.state != "new" or not isinstance(sdp, str):
            return
        answer = parse_answer(sdp)
        senders = []
        for section in link.sections:
            media = answer.media.get(section.mid)
            if media is None or media.codec is None:
                continue
            if section.ssrc is not None and media.direction in ("recvonly", "sendrecv"):
                senders.append(self._sender(section.kind, section.ssrc, media.codec.payload_type,
                                            media.codec.has_feedback("nack"), conn))
            if media.ssrc is not None and media.direction in ("sendonly", "sendrecv") and self.plan.subscribe:
                self._receive(link, section.mid, section.kind, media.ssrc, media.codec.clock_rate,
                              media.codec.has_feedback("nack"))
        if senders:
            link.publisher = Publisher(senders, link.send_rtcp, self.cname, link.router)
        conn.set_remote(answer.ice, answer.fingerprints, answer.dtls_role, answer.candidates)  # type: ignore[arg-type]

    async def _answer(self, remote_id: str, sdp: object) -> None:
        """A newcomer's offer: answer as ICE-lite / DTLS server, sending and receiving what both sides want."""
        if remote_id in self._links:
            raise ValueError("a second offer on an open connection (renegotiation is not supported)")
        if not isinstance(sdp, str):
            raise ValueError("the offer has no SDP")
        offer = parse_offer(sdp)
        link = self._open_link(remote_id)
        try:
            await self._answer_link(link, offer)
        except BaseException:
            self._links.pop(remote_id, None)
            link.close()
            raise

    async def _answer_link(self, link: MeshLink, offer: Offer) -> None:
        conn = await self._connect(link, "lite")
        answers: list[MediaAnswer] = []
        senders = []
        for m in offer.media:
            track = self.env.tracks.get(m.kind)
            codec = choose_codec(m, track.codec) if track is not None and not m.rejected else None
            sends = codec is not None and self.plan.publish and m.direction in ("recvonly", "sendrecv")
            receives = codec is not None and self.plan.subscribe and m.direction in ("sendonly", "sendrecv")
            direction = DIRECTIONS[(sends, receives)]
            if codec is None or direction == "inactive":
                answers.append(MediaAnswer(m, None, "inactive"))
                continue
            ssrc = self.rng.randint(1, 0xFFFFFFFF) if sends else None
            if ssrc is not None:
                senders.append(self._sender(m.kind, ssrc, codec.payload_type, codec.has_feedback("nack"), conn))
            if receives and m.ssrc is not None:
                self._receive(link, m.mid, m.kind, m.ssrc, codec.clock_rate, codec.has_feedback("nack"))
            msid = (self.cname, f"{self.cname}-{m.kind}") if sends else None
            answers.append(MediaAnswer(m, codec, direction, ssrc, self.cname, msid, accepted_extensions(m)))
        if senders:
            link.publisher = Publisher(senders, link.send_rtcp, self.cname, link.router)
        assert conn.local_candidate is not None
        answer = build_answer(session_id=self.rng.getrandbits(62), ice=conn.local_ice, fingerprint=conn.local_fingerprint,
                              candidate=conn.local_candidate, setup="passive", media=answers, bundle=offer.bundle)
        conn.set_remote(offer.ice, offer.fingerprints, dtls_role_for(offer.setup), offer.candidates)  # type: ignore[arg-type]
        assert self.signaling is not None
        await self.signaling.request("relay", to=link.remote_id, data={"type": "answer", "sdp": answer})

    def _sender(self, kind: str, ssrc: int, payload_type: int, nack: bool, conn: Connection) -> StreamSender:
        return StreamSender(self.env.tracks[kind], ssrc=ssrc, payload_type=payload_type, send_rtp=conn.send_rtp,
                            rng=self.rng, nack=nack)

    def _receive(self, link: MeshLink, mid: str, kind: str, ssrc: int, clock_rate: int, nack: bool) -> None:
        track = self.env.tracks[kind]
        info = ConsumerInfo(
            consumer_id=f"{self.peer_id}/{link.remote_id}/{kind}",
            producer_id=f"{link.remote_id}/{kind}",
            producer_peer=link.remote_id,
            producer_name=link.remote_name,
            kind=kind,
            codec=track.codec,
            mid=mid,
            ssrc=ssrc,
            clock_rate=clock_rate,
            nack=nack,
        )
        assert link.subscriber is not None
        link.subscriber.add(ConsumerStream(info, link.announced_at, self.env.decode))

    # -- what the server and the links say ------------------------------------------------------------
    async def _notifications(self) -> None:
        assert self.signaling is not None
        queue = self.signaling.notifications
        while True:
            method, params = await queue.get()
            if method == "peerJoined":
                peer = params.get("peer", {})
                if isinstance(peer.get("id"), str):
                    self._names[peer["id"]] = str(peer.get("name", ""))
            elif method == "peerLeft":
                self._peer_left(params.get("peerId"))
            elif method == "relayed":
                self._relayed(params.get("from"), params.get("data"))

    def _relayed(self, remote_id: object, data: object) -> None:
        if not isinstance(remote_id, str) or not isinstance(data, dict):
            return
        kind = data.get("type")
        if kind == "offer":
            self._tasks.append(asyncio.create_task(self._answer_logged(remote_id, data.get("sdp"))))
        elif kind == "answer" and remote_id in self._links:
            link = self._links[remote_id]
            try:
                self._on_answer(link, data.get("sdp"))
            except ValueError as exc:
                message = f"bad answer from peer {link.remote_name or remote_id}: {exc}"
                if link.ready.done():
                    self.errors.append(message)
                else:
                    link.ready.set_exception(JoinError(message))
                link.close()

    async def _answer_logged(self, remote_id: str, sdp: object) -> None:
        try:
            await self._answer(remote_id, sdp)
        except (ValueError, SignalingError, asyncio.TimeoutError, OSError) as exc:
            self.errors.append(f"answering peer {self._names.get(remote_id, remote_id)} failed: {exc}")

    def _peer_left(self, remote_id: object) -> None:
        link = self._links.get(remote_id) if isinstance(remote_id, str) else None
        if link is not None:
            link.remote_left = True
            link.close()

    def _on_link_state(self, link: MeshLink, state: str) -> None:
        if state == "connected":
            self.transports += 1
            link.started_at = time.monotonic()
            if not link.ready.done():
                link.ready.set_result(True)
            if link.publisher is not None and not self._leaving:
                for sender in link.publisher.senders:
                    self.env.pacer.add(sender)
        elif state in ("failed", "closed"):
            self._links.pop(link.remote_id, None)
            if link.publisher is not None:
                link.publisher.stop()
            # like an SFU consumer, a stream is closed when its sender goes away
            if not self._leaving and link.subscriber is not None:
                now = time.monotonic()
                for stream in list(link.subscriber.by_ssrc.values()):
                    link.subscriber.close(stream.info.consumer_id, now)
            who = link.remote_name or link.remote_id
            if not link.ready.done():
                if link.remote_left or self._leaving:
                    link.ready.set_result(False)
                else:
                    link.ready.set_exception(JoinError(f"direct connection to {who} {state}: ICE/DTLS did not complete"))
            elif state == "failed" and not (link.remote_left or self._leaving):
                self.errors.append(f"direct connection to {who} failed (no ICE consent or DTLS error)")
            link.close()

    # -- figures --------------------------------------------------------------------------------------
    @property
    def send_rtt_ms(self) -> float | None:
        """The mean RTT over the links (each carries both directions)."""
        rtts = [rtt for link in self.links if (rtt := link.rtt_ms) is not None]
        return sum(rtts) / len(rtts) if rtts else None

    @property
    def recv_rtt_ms(self) -> float | None:
        return self.send_rtt_ms


def _retrieve(future: asyncio.Future) -> None:
    """Mark a link's failure as seen when nobody awaits it (a link answered after the join)."""
    if not future.cancelled():
        future.exception()
