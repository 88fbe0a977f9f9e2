"""One bot: signaling, a send transport publishing pre-encoded media, a receive transport subscribing to the
room's other producers (renegotiated as producers come and go), and its report.

A bot never raises out of run(): what goes wrong is recorded in `error` (join failed) or `errors` (later).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from sfuctl.client.data import DataLink, data_section
from sfuctl.client.offer import (
    RECEIVE_CODECS, SEND_CODECS, Answer, AnswerMedia, OfferSection, build_offer, connection_offer, parse_answer,
    simulcast_rids,
)
from sfuctl.client.signaling import SignalingClient, SignalingError
from sfuctl.client.turn import TurnServer
from sfuctl.encoded import EncodedTrack
from sfuctl.rtc.connection import Connection, IceRole
from sfuctl.rtc.dtls import DtlsCertificate
from sfuctl.rtc.ice import IceParameters
from sfuctl.rtc.sdp import AUDIO_LEVEL_URI
from sfuctl.tokens import url_with_token
from sfuctl.rtc.simulcast import RID_URI

from .chat import ChatTraffic
from .config import BotPlan
from .impairment import ImpairmentConfig
from .link import Link
from .pacer import Pacer
from .publisher import Publisher, StreamSender
from .speech import Speaker
from .stats import ConsumerRow, RoomCounters, SentRow, StreamSample
from .subscriber import ConsumerInfo, ConsumerStream, Subscriber
from .udp import open_bot_connection, open_bot_socket

log = logging.getLogger(__name__)

LEAVE_TIMEOUT = 2.0
DATA_MID = "data"  # the m=application section's mid on both connections
RESUBSCRIBE_DELAY = 0.2
MAX_RESUBSCRIBE_RETRIES = 5
REJOIN_DELAYS = (0.2, 5.0)  # first and longest wait (doubling, +-50% jitter) before joining again after `reconnect`


@dataclass
class BotEnv:
    """What the bots of one process share."""

    url: str
    tracks: dict[str, EncodedTrack]
    layers: tuple[EncodedTrack, ...]  # simulcast encodings of the video, lowest first; () publishes `tracks` only
    certificate: DtlsCertificate
    pacer: Pacer
    impairment: ImpairmentConfig
    seed: int
    connect_timeout: float
    join_timeout: float
    rtcp_interval: float
    decode: bool
    started_at: float  # time.monotonic() when the run started
    loop_started_at: float = 0.0  # the same instant on the event loop's clock (impairment timelines)
    access_token: Callable[[BotPlan], str | None] = lambda plan: None  # a bot's token (config.access_token)
    data_rate: float = 0.0  # chat messages per second on a data channel (0: none)
    ice_restart_every: float | None = None  # seconds between a joined bot's ICE restarts
    speakers: int | None = None  # speakers taking turns per room (sfuctl.bots.speech); None: no audio levels
    reconnect: bool = False  # join again when the server is lost, not only on its `reconnect` notification
    ice_tcp: bool = False  # reach the server over its ICE-TCP candidates (RFC 6544) instead of UDP
    relay: bool = False  # relay every transport through the TURN server the server hands out
    local_host: str = "127.0.0.1"  # where the bots' sockets are bound (::1 for a server on IPv6)


class JoinError(Exception):
    """A bot could not join; the message says at which step and why."""


RESTART_POLL_INTERVAL = 0.02  # how often an ICE restart looks whether its new path is up
# A simulcast publisher's first SRs go out this soon after sending starts (every encoding has sent a frame by
# then at 25 fps), instead of after the first randomized RTCP interval.
EARLY_SR_DELAY = 0.1


class Bot:
    """States: waiting -> joining -> joined -> left, or joining -> failed; joined -> disconnected if the server
    or the network drops it. Times are time.monotonic() seconds (the loop's clock has 1 ms grain with uvloop).

    A bot is its lifecycle plus its links (sfuctl.bots.link): an SFU bot's send and receive links here, a mesh
    bot's link per peer, a WHIP/WHEP bot's one link; ticks, reports, leaving and figures go over `links`."""

    def __init__(self, plan: BotPlan, env: BotEnv) -> None:
        self.plan = plan
        self.env = env
        self.loop = asyncio.get_running_loop()
        self.rng = random.Random(f"{env.seed}:{plan.index}")
        self.cname = f"{plan.name}-{self.rng.getrandbits(32):08x}"
        self.status = "waiting"
        self.error: str | None = None
        self.errors: list[str] = []
        self.peer_id: str | None = None
        self.join_started_at: float | None = None
        self.joined_at: float | None = None
        self.left_at: float | None = None
        self.signaling: SignalingClient | None = None
        self.links: list[Link] = []  # every link opened, closed ones too (their figures stay in the report)
        self.next_report_at = float("inf")
        self._stage = "waiting"
        self._send_link: Link | None = None
        self._recv_link: Link | None = None
        self._send_ready: asyncio.Future[None] | None = None
        self._recv_ready: asyncio.Future[None] | None = None
        self._wanted: dict[str, dict] = {}  # producer id -> producerAdded info, for open subscriptions
        self._announced: dict[str, float] = {}  # producer id -> when this bot learnt of it
        self._closed_producers: set[str] = set()
        self._mid_of: dict[str, str] = {}
        self._sections: dict[str, OfferSection] = {}
        self._consumer_ids: set[str] = set()
        self._mids = itertools.count()
        self._session_id = self.rng.getrandbits(62)
        self._recv_version = 0
        self._dirty = asyncio.Event()
        self._lost = asyncio.Event()
        self._moved = asyncio.Event()  # the server sent `reconnect` (its node drains)
        self.reconnects = 0  # joins again after a `reconnect` notification that succeeded
        self.join_done = asyncio.Event()
        self._leaving = False
        self._tasks: list[asyncio.Task] = []
        self._sent_prev: dict[int, int] = {}
        self._closed_collected: set[str] = set()  # closed consumers whose last interval was collected
        self._last_collected = False  # the bot left and its last interval was collected
        self.transports = 0  # ICE/DTLS connections that reached "connected"
        self.ice_restarts = 0  # ICE restarts of this bot's transports that completed
        self.ice_servers: list[dict] = []  # RTCIceServer dictionaries the server handed out
        self._send_sections: list[OfferSection] = []
        self._send_session_id = self.rng.getrandbits(62)
        self._send_version = 1
        self._recv_lock = asyncio.Lock()  # one receive offer at a time (subscriptions, ICE restarts)
        self.chat = ChatTraffic(env.data_rate if plan.publish else 0.0) if env.data_rate else None
        self.speaker = Speaker(plan.speaker, env.speakers) if env.speakers is not None and plan.publish else None

    @property
    def publisher(self) -> Publisher | None:
        return self._send_link.publisher if self._send_link is not None else None

    @property
    def subscriber(self) -> Subscriber | None:
        return self._recv_link.subscriber if self._recv_link is not None else None

    @property
    def joined(self) -> bool:
        return self.joined_at is not None

    @property
    def join_ms(self) -> float | None:
        if self.joined_at is None or self.join_started_at is None:
            return None
        return (self.joined_at - self.join_started_at) * 1000.0

    # -- lifecycle ------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Join, stay until `stop` is set (or the bot is dropped), leave. Never raises but CancelledError."""
        try:
            try:
                await asyncio.wait_for(self._join(), self.env.join_timeout)
            except asyncio.TimeoutError:
                raise JoinError(f"{self._stage}: no answer within {self.env.join_timeout:g} s") from None
        except Exception as exc:  # failures are data: the report says what went wrong
            self.status = "failed"
            self.error = _describe(exc, self._stage)
            self.join_done.set()
        else:
            self.status = "joined"
            self.join_done.set()
            if self.env.ice_restart_every is not None:
                self._tasks.append(asyncio.create_task(self._ice_restarts(self.env.ice_restart_every),
                                                       name=f"{self.plan.name}-ice-restarts"))
            while await self._stay(stop) and await self._rejoin(stop):
                pass
        finally:
            if self.status == "joining":  # cancelled: the run ended while this bot was still joining
                self.status = "failed"
                self.error = f"{self._stage}: the run ended before the bot joined"
            elif self.status == "reconnecting":  # cancelled while joining again
                self.status = "disconnected"
            await self._leave()

    async def _stay(self, stop: asyncio.Event) -> bool:
        """Wait for `stop`, a loss (status disconnected; True with env.reconnect) or a `reconnect` notification
        (True)."""
        waiters = [asyncio.ensure_future(e.wait()) for e in (stop, self._lost, self._moved)]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if stop.is_set():
            return False
        if self._moved.is_set() or self.env.reconnect:
            return True
        self.status = "disconnected"
        return False

    async def _rejoin(self, stop: asyncio.Event) -> bool:
        """Leave this session and join the room again (a draining or lost cluster node: another node hosts it),
        retrying with backoff until it works (True) or `stop` (False, status disconnected)."""
        delay = REJOIN_DELAYS[0]
        while True:
            await self._end_session()
            if await _wait(stop, delay * self.rng.uniform(0.5, 1.5)):
                self.status = "disconnected"
                return False
            try:
                await asyncio.wait_for(self._join(), self.env.join_timeout)
            except asyncio.TimeoutError:
                self.errors.append(f"join again after reconnect: {self._stage}: no answer within {self.env.join_timeout:g} s")
            except Exception as exc:
                self.errors.append(f"join again after reconnect: {_describe(exc, self._stage)}")
            else:
                self.status = "joined"
                self.reconnects += 1
                return True
            delay = min(delay * 2, REJOIN_DELAYS[1])

    async def _end_session(self) -> None:
        """Close this session (signaling, links) and forget it; the links' figures stay in the report."""
        self._leaving = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        now = time.monotonic()
        for link in self._live_links():
            link.stop_sending()
            if link.subscriber is not None:
                for stream in link.subscriber.streams:
                    link.subscriber.close(stream.info.consumer_id, now)
        await self._signal_leave()
        for link in self._live_links():
            link.close()
        await self._close_signaling()
        self._tasks = []
        self.signaling = self.peer_id = None
        self._send_link = self._recv_link = self._send_ready = self._recv_ready = None
        self._wanted, self._announced, self._closed_producers = {}, {}, set()
        self._mid_of, self._sections, self._consumer_ids = {}, {}, set()
        self._send_sections = []
        self._session_id, self._send_session_id = self.rng.getrandbits(62), self.rng.getrandbits(62)
        self._recv_version, self._send_version = 0, 1
        for event in (self._dirty, self._lost, self._moved):
            event.clear()
        self._leaving = False
        self.status = "reconnecting"

    async def _join_room(self) -> dict:
        """Open the websocket, join the plan's room and start listening; the join result."""
        if self.status != "reconnecting":  # join_ms is the first join's
            self.status = "joining"
            self.join_started_at = time.monotonic()
        self._stage = "connecting signaling"
        url = url_with_token(self.env.url, self.env.access_token(self.plan))
        self.signaling = await SignalingClient.connect(url, timeout=self.env.connect_timeout)
        self._stage = "joining"
        joined = await self.signaling.request("join", room=self.plan.room, name=self.plan.name)
        self.peer_id = joined["peerId"]
        self.ice_servers = joined.get("iceServers", [])
        self._tasks.append(asyncio.create_task(self._notifications(), name=f"{self.plan.name}-notifications"))
        self._tasks.append(asyncio.create_task(self._watch_signaling(), name=f"{self.plan.name}-signaling"))
        return joined

    async def _join(self) -> None:
        joined = await self._join_room()
        if self.plan.publish and self.env.tracks:
            self._stage = "publishing"
            await self._publish()
        if self.plan.subscribe:
            for producer in joined.get("producers", []):
                self._want(producer, self.join_started_at)
            if self._wanted:
                self._stage = "subscribing"
                await self._subscribe_once()
            self._tasks.append(asyncio.create_task(self._subscriptions(), name=f"{self.plan.name}-subscriptions"))
        await self._connect_transports()

    async def _connect_transports(self) -> None:
        """Wait for ICE/DTLS on the transports opened so far; the bot has joined when they are connected."""
        if self._send_ready is not None:
            self._stage = "connecting the send transport (ICE/DTLS)"
            await self._send_ready
        if self._recv_ready is not None:
            self._stage = "connecting the receive transport (ICE/DTLS)"
            await self._recv_ready
        self._stage = "joined"
        now = time.monotonic()
        if self.joined_at is None:  # the first join (joining again after `reconnect` keeps it)
            self.joined_at = now
        self.next_report_at = now + self.env.rtcp_interval * self.rng.uniform(0.5, 1.5)

    async def _leave(self) -> None:
        self._leaving = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for link in self._live_links():
            link.stop_sending()
        if self.chat is not None:
            self.chat.stop()
        await self._signal_leave()
        links = self._live_links()
        for link in links:
            link.close()
        await self._close_signaling()
        await self._wait_closed(links)
        self.left_at = time.monotonic()
        if self.status == "joined":
            self.status = "left"

    @staticmethod
    async def _wait_closed(links: list[Link]) -> None:
        """Until the links' sockets are closed, their TURN allocations released (at most LEAVE_TIMEOUT)."""
        try:
            await asyncio.wait_for(asyncio.gather(*(link.wait_closed() for link in links)), LEAVE_TIMEOUT)
        except asyncio.TimeoutError:
            pass

    def _live_links(self) -> list[Link]:
        return [link for link in self.links if not link.closed]

    # -- signaling (websocket here; sfuctl.bots.http_bot replaces these for WHIP/WHEP) ----------------
    async def _publish_offer(self, offer: str) -> str:
        """Send the send transport's offer; return the server's answer SDP."""
        assert self.signaling is not None
        result = await self.signaling.request("publish", sdp=offer)
        return result["sdp"]

    async def _signal_leave(self) -> None:
        """Tell the server this bot leaves (before its transports close)."""
        signaling = self.signaling
        if signaling is not None and self.peer_id is not None and not signaling.closed.is_set():
            try:
                await signaling.request("leave", timeout=LEAVE_TIMEOUT)
            except (SignalingError, asyncio.TimeoutError, OSError):
                pass

    async def _close_signaling(self) -> None:
        """Close the signaling channel (after the transports)."""
        if self.signaling is not None:
            try:
                await asyncio.wait_for(self.signaling.close(), LEAVE_TIMEOUT)
            except (asyncio.TimeoutError, OSError):
                pass

    def _mark_lost(self, reason: str) -> None:
        if self._leaving or self._lost.is_set():
            return
        self.errors.append(reason)
        self._lost.set()

    def _add_link(self, link: Link) -> Link:
        self.links.append(link)
        return link

    async def _connect_link(self, link: Link, on_state: Callable[[str], None], role: IceRole = "controlling") -> Connection:
        """Open the link's transport on its own socket, impaired by this bot's timeline (the link's name seeds
        its impairment draws); RTP goes to its subscriber, RTCP through its router."""
        link.connection, link.socket = await open_bot_connection(
            certificate=self.env.certificate,
            impairment=ImpairmentConfig(),
            changes=self._impairment_changes(),
            seed=f"{self.env.seed}:{self.plan.index}:{link.name}",
            on_rtp=link.on_rtp,
            on_rtcp=link.router.route,
            on_state=on_state,
            connect_timeout=self.env.connect_timeout,
            role=role,
            local_host=self.env.local_host,
            turn=self._turn(),
        )
        return link.connection

    def _turn(self) -> TurnServer | None:
        """The TURN server to relay through (--relay), from the ICE servers the server handed out."""
        return TurnServer.pick(self.ice_servers) if self.env.relay else None

    async def _set_remote(self, link: Link | None, answer: Answer) -> None:
        """Start the link's connection towards the server's answer, over UDP or ICE-TCP as the run asks."""
        assert link is not None and link.connection is not None and link.socket is not None
        candidates = await link.socket.reach(answer.candidates, answer.tcp_candidates, self.env.ice_tcp)
        link.connection.set_remote(answer.ice, answer.fingerprints, answer.dtls_role, candidates)  # type: ignore[arg-type]

    # -- ICE restart ----------------------------------------------------------------------------------
    async def restart_ice(self) -> None:
        """Restart ICE on each connected transport: new credentials from a new local port (a network change);
        DTLS, SRTP and the streams carry on, media moving to the new path once its first check succeeds."""
        for which, link in (("send", self._send_link), ("recv", self._recv_link)):
            if link is not None and link.connection is not None and link.connection.state == "connected":
                await self._restart_link(which, link)

    async def _ice_restarts(self, every: float) -> None:
        """Restart ICE every `every` seconds while joined; a failed restart is one of the bot's errors."""
        while True:
            await asyncio.sleep(every)
            try:
                await self.restart_ice()
            except (SignalingError, JoinError, ValueError, OSError, asyncio.TimeoutError) as exc:
                self.errors.append(f"ICE restart failed: {_describe(exc, 'restarting ICE')}")

    async def _restart_link(self, which: str, link: Link) -> None:
        conn, old = link.connection, link.socket
        assert conn is not None and old is not None
        sock = await open_bot_socket(
            impairment=ImpairmentConfig(),
            changes=self._impairment_changes(),
            seed=f"{self.env.seed}:{self.plan.index}:{which}:restart-{self.ice_restarts + 1}",
            local_host=self.env.local_host,
            turn=self._turn(),
        )
        local = IceParameters.random()
        try:
            # The receive offer and the restart go together: a subscription offer in between would carry the
            # credentials the server just retired.
            async with self._recv_lock if which == "recv" else contextlib.nullcontext():
                remote, udp, tcp = await self._exchange_ice_restart(which, conn, local, sock.local_address)
                candidates = await sock.reach(udp, tcp, self.env.ice_tcp)
                sock.connection = conn
                conn.restart_ice(remote, candidates, local=local, send=sock.send)
        except BaseException:
            sock.close()
            raise
        conn.local_candidate = sock.local_address
        link.socket = sock
        deadline = time.monotonic() + self.env.connect_timeout
        while conn.ice_restarting and conn.state == "connected" and time.monotonic() < deadline:
            await asyncio.sleep(RESTART_POLL_INTERVAL)
        old.close()
        if conn.ice_restarting or conn.state != "connected":
            raise ValueError(f"the {which} transport's ICE restart found no path ({conn.state})")
        self.ice_restarts += 1

    async def _exchange_ice_restart(
        self, which: str, conn: Connection, local: IceParameters, candidate: tuple[str, int]
    ) -> tuple[IceParameters, list[tuple[str, int]], list[tuple[str, int]]]:
        """Signal new local ICE credentials and candidate; the server's new credentials, UDP and TCP candidates.
        Websocket bots renegotiate with the same m-lines (sfuctl.bots.http_bot PATCHes instead)."""
        assert self.signaling is not None
        if which == "send":
            self._send_version += 1
            offer = build_offer(session_id=self._send_session_id, version=self._send_version, ice=local,
                                fingerprint=conn.local_fingerprint, candidate=candidate, sections=self._send_sections)
            answer = parse_answer(await self._publish_offer(offer))
        else:
            self._recv_version += 1
            offer = build_offer(session_id=self._session_id, version=self._recv_version, ice=local,
                                fingerprint=conn.local_fingerprint, candidate=candidate,
                                sections=list(self._sections.values()))
            subscriptions = {self._mid_of[p]: p for p in self._wanted if p in self._mid_of}
            result = await self.signaling.request("subscribe", sdp=offer, subscriptions=subscriptions)
            answer = parse_answer(result["sdp"])
        return answer.ice, answer.candidates, answer.tcp_candidates

    def _impairment_changes(self) -> tuple[tuple[float, ImpairmentConfig], ...]:
        """This bot's impairment timeline on the loop's clock, for its sockets."""
        start = self.env.loop_started_at
        return tuple((start + step.at, step.impairment) for step in self.plan.impairment_timeline(self.env.impairment))

    # -- publishing -----------------------------------------------------------------------------------
    async def _publish(self) -> None:
        link = self._send_link = self._add_link(Link("send"))
        conn = await self._connect_link(link, self._on_send_state)
        self._send_ready = self.loop.create_future()
        sections = []
        used: set[int] = set()

        def new_ssrc() -> int:
            ssrc = self.rng.randint(1, 0xFFFFFFFF)
            while ssrc in used:
                ssrc = self.rng.randint(1, 0xFFFFFFFF)
            used.add(ssrc)
            return ssrc

        layers = self.env.layers
        rids = simulcast_rids(len(layers))
        for number, kind in enumerate(k for k in ("video", "audio") if k in self.env.tracks):
            track = self.env.tracks[kind]
            simulcast = kind == "video" and bool(layers)
            sections.append(
                OfferSection(
                    mid=str(number),
                    kind=kind,
                    direction="sendonly",
                    codecs=(SEND_CODECS[layers[0].codec if simulcast else track.codec],),
                    ssrc=None if simulcast else new_ssrc(),
                    cname=self.cname,
                    msid=(self.cname, f"{self.cname}-{kind}"),
                    rids=rids if simulcast else (),
                )
            )
        if self.chat is not None:
            sections.append(data_section(DATA_MID))
        self._send_sections = sections
        offer = connection_offer(conn, sections, session_id=self._send_session_id)
        answer = parse_answer(await self._publish_offer(offer))
        if self.chat is not None:
            sections.pop()
            self._attach_data(conn, answer.media.get(DATA_MID), self.chat.attach_send)
        senders = []
        for section in sections:
            media = answer.media.get(section.mid)
            if media is None or media.codec is None:
                raise JoinError(f"the server rejected the {section.kind} track (mid {section.mid})")
            common = dict(payload_type=media.codec.payload_type, send_rtp=conn.send_rtp, rng=self.rng, nack=media.codec.has_feedback("nack"))
            if not section.rids:
                assert section.ssrc is not None
                senders.append(
                    StreamSender(
                        self.env.tracks[section.kind],
                        ssrc=section.ssrc,
                        level=self.speaker.level if self.speaker is not None else None,
                        level_id=media.extensions.get(AUDIO_LEVEL_URI),
                        **common,
                    )
                )
                continue
            if RID_URI not in media.extensions:
                raise JoinError(f"the server did not accept simulcast on mid {section.mid} (no rtp-stream-id in its answer)")
            for rid, track in zip(section.rids, layers):
                extensions = media.encoding_extensions(rid)
                senders.append(StreamSender(track, ssrc=new_ssrc(), extensions=extensions, rid=rid, **common))
        link.publisher = Publisher(senders, link.send_rtcp, self.cname, link.router)
        await self._set_remote(link, answer)

    def _on_send_state(self, state: str) -> None:
        ready = self._send_ready
        if state == "connected":
            self.transports += 1
            if ready is not None and not ready.done():
                ready.set_result(None)
            if self.chat is not None and not self._leaving:
                self.chat.send_connected()
            if self.publisher is not None and not self._leaving:
                assert self._send_link is not None
                self._send_link.started_at = time.monotonic()
                for sender in self.publisher.senders:
                    self.env.pacer.add(sender)
                if self.env.layers:  # the server aligns encodings through their SRs: send the first ones early
                    self.next_report_at = min(self.next_report_at, self._send_link.started_at + EARLY_SR_DELAY)
        elif state in ("failed", "closed"):
            if self.publisher is not None:
                self.publisher.stop()
            self._transport_down(ready, "send", state)

    # -- subscribing ----------------------------------------------------------------------------------
    def _want(self, producer: dict, announced_at: float) -> None:
        producer_id = producer.get("id")
        if (
            not isinstance(producer_id, str)
            or producer.get("peerId") == self.peer_id
            or producer.get("kind") not in RECEIVE_CODECS
            or producer_id in self._wanted
            or producer_id in self._closed_producers
        ):
            return
        self._wanted[producer_id] = producer
        self._announced[producer_id] = announced_at

    def _drop(self, producer_id: str) -> None:
        self._closed_producers.add(producer_id)
        self._wanted.pop(producer_id, None)
        mid = self._mid_of.get(producer_id)
        if mid is not None:
            section = self._sections[mid]
            self._sections[mid] = OfferSection(mid, section.kind, "inactive", section.codecs)

    async def _notifications(self) -> None:
        assert self.signaling is not None
        queue = self.signaling.notifications
        while True:
            method, params = await queue.get()
            if method == "producerAdded" and self.plan.subscribe:
                producer = params.get("producer", {})
                before = len(self._wanted)
                self._want(producer, time.monotonic())
                if len(self._wanted) != before:
                    self._dirty.set()
            elif method == "producerClosed":
                self._drop(params.get("producerId", ""))
            elif method == "consumerClosed" and self.subscriber is not None:
                self.subscriber.close(params.get("consumerId", ""), time.monotonic())
            elif method == "dataConsumerAdded" and self.chat is not None:
                self.chat.on_consumer_added(params)
            elif method == "activeSpeaker" and self.speaker is not None:
                self.speaker.on_active_speaker(params.get("peerId"), self.peer_id)
            elif method == "producerLayersActive" and self.publisher is not None:
                self.publisher.set_active_layers(params.get("layers"), time.monotonic())
            elif method == "reconnect":
                self._moved.set()

    async def _watch_signaling(self) -> None:
        assert self.signaling is not None
        await self.signaling.closed.wait()
        self._mark_lost("signaling connection closed by the server")

    async def _subscriptions(self) -> None:
        retries = 0
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._subscribe_once()
                retries = 0
            except SignalingError as exc:
                if exc.code == "closed":
                    return
                if exc.code == "not_found" and retries < MAX_RESUBSCRIBE_RETRIES:
                    # A producer closed while the offer was on its way: its producerClosed drops it.
                    retries += 1
                    await asyncio.sleep(RESUBSCRIBE_DELAY)
                    self._dirty.set()
                else:
                    self.errors.append(f"subscribe failed: {exc}")
            except (ValueError, asyncio.TimeoutError, OSError) as exc:
                self.errors.append(f"subscribe failed: {_describe(exc, 'subscribing')}")

    async def _subscribe_once(self) -> None:
        """Send the full receive offer with a recvonly m-line per wanted producer; start the new consumers."""
        async with self._recv_lock:
            await self._subscribe_locked()

    async def _subscribe_locked(self) -> None:
        conn = await self._open_receive()
        if self.chat is not None and DATA_MID not in self._sections:
            self._sections[DATA_MID] = data_section(DATA_MID)
        for producer_id, producer in self._wanted.items():
            if producer_id not in self._mid_of:
                mid = str(next(self._mids))
                self._mid_of[producer_id] = mid
                kind = producer["kind"]
                self._sections[mid] = OfferSection(mid, kind, "recvonly", RECEIVE_CODECS[kind])
        subscriptions = {self._mid_of[producer_id]: producer_id for producer_id in self._wanted}
        if not subscriptions:
            return
        self._recv_version += 1
        assert self.signaling is not None
        offer = connection_offer(conn, list(self._sections.values()), session_id=self._session_id, version=self._recv_version)
        result = await self.signaling.request("subscribe", sdp=offer, subscriptions=subscriptions)
        answer = parse_answer(result["sdp"])
        if conn.state == "new":
            if self.chat is not None:
                self._attach_data(conn, answer.media.get(DATA_MID), self.chat.attach_receive)
            await self._set_remote(self._recv_link, answer)
        now = time.monotonic()
        assert self.subscriber is not None
        # The answer announces it beside a video consumer; the result names it also when all are audio.
        self.subscriber.probe_ssrc = answer.probe_ssrc if answer.probe_ssrc is not None else result.get("probeSsrc")
        for consumer in result.get("consumers", []):
            if consumer["id"] in self._consumer_ids:
                continue
            media = answer.media.get(consumer["mid"])
            if media is None or media.codec is None:
                continue
            producer = self._wanted.get(consumer["producerId"], {})
            info = ConsumerInfo(
                consumer_id=consumer["id"],
                producer_id=consumer["producerId"],
                producer_peer=consumer["peerId"],
                producer_name=producer.get("peerName", ""),
                kind=consumer["kind"],
                codec=consumer["codec"],
                mid=consumer["mid"],
                ssrc=consumer["ssrc"],
                clock_rate=media.codec.clock_rate,
                nack=media.codec.has_feedback("nack"),
            )
            self._consumer_ids.add(info.consumer_id)
            self.subscriber.record_arrivals(media.extensions)
            self.subscriber.add(ConsumerStream(info, self._announced.get(info.producer_id, now), self.env.decode))
        for rejected in result.get("rejected", []):
            self.errors.append(f"subscription to producer {rejected.get('producerId')} rejected: {rejected.get('reason')}")

    async def _open_receive(self) -> Connection:
        """The receive transport and its Subscriber, opened on first use."""
        link = self._recv_link
        if link is None:
            link = self._recv_link = self._add_link(Link("recv"))
            link.subscriber = Subscriber(link.send_rtcp, self.cname, self.rng.randint(1, 0xFFFFFFFF), time.monotonic, link.router)
            await self._connect_link(link, self._on_recv_state)
            self._recv_ready = self.loop.create_future()
        assert link.connection is not None
        return link.connection

    def _on_recv_state(self, state: str) -> None:
        ready = self._recv_ready
        if state == "connected":
            self.transports += 1
            if ready is not None and not ready.done():
                ready.set_result(None)
            if self.chat is not None and not self._leaving:
                self.chat.receive_connected()
        elif state in ("failed", "closed"):
            self._transport_down(ready, "receive", state)

    def _attach_data(
        self, conn: Connection, answer: AnswerMedia | None, attach: Callable[[DataLink, AnswerMedia], None]
    ) -> None:
        """Give the chat a DataLink on `conn` if the server accepted its m=application section."""
        if answer is None or answer.sctp_port is None:
            self.errors.append("the server refused data channels (m=application)")
            return
        attach(DataLink(conn), answer)

    def _transport_down(self, ready: asyncio.Future[None] | None, which: str, state: str) -> None:
        """A transport failed or closed: a join in progress fails, a joined bot is marked disconnected."""
        if ready is not None and not ready.done():
            if self.status == "joining":
                ready.set_exception(JoinError(f"{which} transport {state}: ICE/DTLS did not complete"))
                return
            ready.cancel()
        self._mark_lost(f"{which} transport {state}")

    # -- periodic work (driven by the process's BotGroup) ----------------------------------------------
    def tick(self, now: float) -> None:
        """NACK/PLI every tick; SR/RR/SDES at randomized RTCP intervals (RFC 3550 6.3.1: 0.5-1.5 x)."""
        links = self._live_links()
        for link in links:
            link.tick(now)
        if now >= self.next_report_at:
            self.next_report_at = now + self.env.rtcp_interval * self.rng.uniform(0.5, 1.5)
            for link in links:
                link.send_reports(now)

    def _sending(self) -> list[tuple[StreamSender, float | None]]:
        """Every stream this bot sends, with when its link started sending (None: not yet)."""
        return [pair for link in self.links for pair in link.sending()]

    def _receiving(self) -> list[tuple[ConsumerStream, float | None]]:
        """Every stream this bot receives (closed ones too), with the RTT of the link it arrives on."""
        return [(stream, link.rtt_ms) for link in self.links for stream in link.receiving()]

    @property
    def send_rtt_ms(self) -> float | None:
        return self._send_link.stun_rtt_ms if self._send_link is not None else None

    @property
    def recv_rtt_ms(self) -> float | None:
        return self._recv_link.stun_rtt_ms if self._recv_link is not None else None

    def collect(
        self, counters: RoomCounters, interval: float, streams: StreamSample | None = None, now: float | None = None
    ) -> None:
        """Add this bot to its room's counters for the interval of `interval` seconds that just ended (at `now`,
        time.monotonic()), and its streams' rows to `streams`."""
        now = time.monotonic() if now is None else now
        begin = now - interval
        counters.bots += 1
        if self.status == "failed":
            counters.failed += 1
        elif self.joined:
            counters.joined += 1
            if self.status == "joined":
                counters.active += 1
        index = self.plan.index
        for sender, started_at in self._sending():
            previous = self._sent_prev.get(sender.ssrc, 0)
            self._sent_prev[sender.ssrc] = sender.octets
            if sender.active:
                counters.streams_sent += 1
                counters.sent_bps += (sender.octets - previous) * 8 / interval
                if streams is not None:
                    seconds = _overlap(begin, now, started_at, self.left_at)
                    streams.sent.append(SentRow(index, sender.kind, sender.octets - previous, seconds))
        receiving = self._receiving()
        until = now if self.left_at is None else min(now, self.left_at)  # an open freeze counts up to here
        for stream, _ in receiving:  # totals since the start
            freezes, frozen = stream.freeze_totals(until)
            counters.freezes += freezes
            counters.freeze_ms += frozen * 1000.0
        if self._last_collected:
            return
        # A consumer that closed, or a bot that left, is collected once more: the rest of its last interval.
        self._last_collected = self.left_at is not None
        for stream, rtt in receiving:
            if stream.closed_at is not None:
                if stream.info.consumer_id in self._closed_collected:
                    continue
                self._closed_collected.add(stream.info.consumer_id)
            received, expected, lost, lost_first, freezes, frozen, lost_frames = stream.interval(until)
            counters.received_bps += received * 8 / interval
            counters.expected += expected
            counters.lost += lost
            counters.lost_first += lost_first
            jitter = stream.reception.jitter_ms if stream.packets else None
            if stream.closed_at is None and self.left_at is None:  # a stream still received
                counters.streams_received += 1
                if jitter is not None:
                    counters.jitter_sum += jitter
                    counters.jitter_count += 1
                    counters.jitter_max = max(counters.jitter_max, jitter)
                    if rtt is not None:
                        counters.rtt_sum += rtt
                        counters.rtt_count += 1
            if streams is not None:
                info = stream.info
                end = stream.closed_at if stream.closed_at is not None else self.left_at
                streams.consumers.append(
                    ConsumerRow(index, info.consumer_id, info.kind, received, expected, lost, lost_first, freezes,
                                frozen * 1000.0, lost_frames, jitter, rtt, _overlap(begin, now, stream.announced_at, end))
                )

    def report(self, now: float) -> dict:
        """This bot in the JSON report (docs/bots.md)."""
        started = self.env.started_at
        end = self.left_at if self.left_at is not None else now
        sent = [sender.stats(end - began if began is not None else 0.0, end) for sender, began in self._sending()]
        consumers = []
        for stream, rtt in self._receiving():
            consumer = stream.stats(end, rtt)
            first = stream.first_frame_at
            consumer["first_frame_at_s"] = first - started if first is not None else None
            consumer["sizes"] = [[round(at - started, 3), width, height] for at, width, height in stream.size_log]
            consumer["freeze_log"] = [[round(at - started, 3), round(seconds * 1000, 1)] for at, seconds in stream.frames.freeze_log]
            consumers.append(consumer)
        return {
            "index": self.plan.index,
            "name": self.plan.name,
            "room": self.plan.room,
            "peer_id": self.peer_id,
            "publisher": self.plan.publish,
            "subscriber": self.plan.subscribe,
            "impaired": self.plan.impaired,
            "mesh": self.plan.mesh,
            "transports": self.transports,
            "ice_restarts": self.ice_restarts,
            "reconnects": self.reconnects,
            "status": self.status,
            "joined": self.joined,
            "error": self.error,
            "errors": self.errors,
            "join_ms": self.join_ms,
            "joined_at_s": self.joined_at - started if self.joined_at is not None else None,
            "left_at_s": self.left_at - started if self.left_at is not None else None,
            "send_rtt_ms": self.send_rtt_ms,
            "recv_rtt_ms": self.recv_rtt_ms,
            "sent": sent,
            "consumers": consumers,
            "data": self.chat.report() if self.chat is not None else None,
            "speaker": self.speaker.report() if self.speaker is not None else None,
        }


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Wait `seconds` or until `event` is set; whether it is."""
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except asyncio.TimeoutError:
        pass
    return event.is_set()


def _overlap(begin: float, end: float, opened: float | None, closed: float | None) -> float:
    """Seconds of [begin, end] during which something opened at `opened` (None: already) and closed at
    `closed` (None: still open) was open."""
    start = begin if opened is None else max(begin, opened)
    stop = end if closed is None else min(end, closed)
    return max(0.0, stop - start)


def _describe(exc: BaseException, stage: str) -> str:
    """One line saying what failed: the step and the reason."""
    if isinstance(exc, JoinError):
        return str(exc)
    if isinstance(exc, ConnectionError):
        return str(exc)
    if isinstance(exc, SignalingError):
        return f"{stage}: server said {exc.code}: {exc.message}"
    if isinstance(exc, asyncio.TimeoutError):
        return f"{stage}: timed out"
    return f"{stage}: {type(exc).__name__}: {exc}"
