"""A bot that publishes over WHIP or plays over WHEP (any server's endpoint): one POST of its offer, the same
transports, media, statistics and report as a websocket bot, and a DELETE of its resource when it leaves.

A WHEP bot knows its streams only from the answer's m-lines and SSRCs: producer ids and names are unknown.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urljoin

import aiohttp
from aiortc import sdp as aiortc_sdp

from sfuctl.client.offer import RECEIVE_CODECS, OfferSection, connection_offer, parse_answer, sort_candidates
from sfuctl.rtc.connection import Connection
from sfuctl.rtc.ice import IceParameters
from sfuctl.rtc.sdp import parse_ice_fragment

from sfuctl.client.turn import ice_servers_from_links

from .bot import LEAVE_TIMEOUT, Bot, BotEnv, JoinError
from .config import BotPlan
from .subscriber import ConsumerInfo, ConsumerStream

SDP_TYPE = "application/sdp"
ICE_FRAGMENT_TYPE = "application/trickle-ice-sdpfrag"
KINDS = ("video", "audio")


class HttpBot(Bot):
    """plan.publish: publish to the WHIP endpoint `env.url`; plan.subscribe: play from the WHEP endpoint."""

    def __init__(self, plan: BotPlan, env: BotEnv) -> None:
        super().__init__(plan, env)
        self._http: aiohttp.ClientSession | None = None
        self._resource: str | None = None  # absolute URL of the WHIP/WHEP session, DELETEd on leave
        self._bundle_tag: tuple[str, str] | None = None  # (kind, mid) of the offer's first m-line

    async def _join(self) -> None:
        self.status = "joining"
        self.join_started_at = time.monotonic()
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.env.connect_timeout))
        if self.env.relay:
            await self._ask_ice_servers()
        if self.plan.publish and self.env.tracks:
            self._stage = "publishing (WHIP)"
            await self._publish()
        elif self.plan.subscribe:
            self._stage = "playing (WHEP)"
            await self._play()
        await self._connect_transports()

    async def _publish_offer(self, offer: str) -> str:
        if self._send_sections:
            self._bundle_tag = (self._send_sections[0].kind, self._send_sections[0].mid)
        return await self._post(offer)

    async def _play(self) -> None:
        """Offer a recvonly m-line per kind; each m-line the answer accepts is one consumer."""
        conn = await self._open_receive()
        kinds = [kind for kind in KINDS if kind in self.env.tracks] or list(KINDS)
        sections = [OfferSection(str(mid), kind, "recvonly", RECEIVE_CODECS[kind]) for mid, kind in enumerate(kinds)]
        offer = connection_offer(conn, sections, session_id=self._session_id)
        self._bundle_tag = (sections[0].kind, sections[0].mid)
        answer = parse_answer(await self._post(offer))
        assert self.subscriber is not None and self._resource is not None
        session = self._resource.rstrip("/").rsplit("/", 1)[-1]
        for section in sections:
            media = answer.media.get(section.mid)
            if media is None or media.codec is None or media.ssrc is None:
                self.errors.append(f"the WHEP answer accepts no {section.kind} stream (mid {section.mid})")
                continue
            info = ConsumerInfo(
                consumer_id=f"{session}-{section.mid}",
                producer_id="",
                producer_peer="",
                producer_name="",
                kind=section.kind,
                codec=media.codec.name,
                mid=section.mid,
                ssrc=media.ssrc,
                clock_rate=media.codec.clock_rate,
                nack=media.codec.has_feedback("nack"),
            )
            self.subscriber.record_arrivals(media.extensions)
            self.subscriber.add(ConsumerStream(info, self.join_started_at or time.monotonic(), self.env.decode))
        self.subscriber.probe_ssrc = answer.probe_ssrc
        await self._set_remote(self._recv_link, answer)

    async def _exchange_ice_restart(
        self, which: str, conn: Connection, local: IceParameters, candidate: tuple[str, int]
    ) -> tuple[IceParameters, list[tuple[str, int]], list[tuple[str, int]]]:
        """RFC 9725 section 4.3.2: PATCH the resource with the new credentials and candidate (If-Match: *)."""
        assert self._http is not None and self._resource is not None and self._bundle_tag is not None
        kind, mid = self._bundle_tag
        host, port = candidate
        fragment = (
            f"a=ice-ufrag:{local.ufrag}\r\na=ice-pwd:{local.pwd}\r\nm={kind} 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:{mid}\r\n"
            f"a=candidate:1 1 udp 2130706431 {host} {port} typ host\r\na=end-of-candidates\r\n"
        )
        headers = {"Content-Type": ICE_FRAGMENT_TYPE, "If-Match": "*", **self._headers()}
        async with self._http.patch(self._resource, data=fragment, headers=headers) as response:
            body = await response.text()
            if response.status != 200:
                reason = body.strip().splitlines()[0] if body.strip() else "no reason given"
                raise JoinError(f"ICE restart: {self._resource} answered {response.status} {response.reason}: {reason}")
        answer = parse_ice_fragment(body)
        if answer.ice is None:
            raise ValueError("the ICE restart answer has no a=ice-ufrag/a=ice-pwd")
        udp, tcp = sort_candidates(aiortc_sdp.candidate_from_sdp(value) for value in answer.candidates)
        return answer.ice, udp, tcp

    def _headers(self) -> dict[str, str]:
        token = self.env.access_token(self.plan)
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def _ask_ice_servers(self) -> None:
        """OPTIONS on the endpoint: the ICE servers of its Link headers (RFC 9725 section 4.6), before offering."""
        assert self._http is not None
        try:
            async with self._http.options(self.env.url, headers=self._headers()) as response:
                self.ice_servers = ice_servers_from_links(response.headers.getall("Link", []))
        except aiohttp.ClientError as exc:
            raise JoinError(f"asking {self.env.url} for its ICE servers: {exc}") from None

    async def _post(self, offer: str) -> str:
        """POST the offer to the endpoint; the answer SDP. Any status but 201 is a JoinError naming it."""
        assert self._http is not None
        url = self.env.url
        headers = {"Content-Type": SDP_TYPE, **self._headers()}
        try:
            async with self._http.post(url, data=offer, headers=headers) as response:
                body = await response.text()
                if response.status != 201:
                    reason = body.strip().splitlines()[0] if body.strip() else "no reason given"
                    raise JoinError(f"{self._stage}: {url} answered {response.status} {response.reason}: {reason}")
                location = response.headers.get("Location")
                if not location:
                    raise JoinError(f"{self._stage}: {url} answered 201 without a Location header")
                self._resource = urljoin(url, location)
                return body
        except aiohttp.ClientError as exc:
            raise JoinError(f"{self._stage}: cannot reach {url} ({exc})") from None

    async def _signal_leave(self) -> None:
        """DELETE the session's resource; a server that is gone or already forgot it is not an error."""
        if self._http is None or self._resource is None:
            return
        try:
            async with self._http.delete(
                self._resource, headers=self._headers(), timeout=aiohttp.ClientTimeout(total=LEAVE_TIMEOUT)
            ):
                pass
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass

    async def _close_signaling(self) -> None:
        if self._http is not None:
            await self._http.close()
