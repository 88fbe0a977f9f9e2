"""ICE restarts (RFC 8445 section 9): new credentials and a new local port mid-call; the streams carry on."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from sfuctl.bots.config import BotsConfig
from sfuctl.bots.runner import run_bots
from sfuctl.client.offer import OPUS, VP8, OfferSection, build_offer, connection_offer, parse_answer
from sfuctl.client.signaling import SignalingClient, SignalingError
from sfuctl.media import MediaSpec, make_media
from sfuctl.rtc.connection import open_client_connection
from sfuctl.rtc.ice import IceParameters
from sfuctl.rtc.sdp import parse_ice_fragment
from sfuctl.server.app import start_server
from sfuctl.server.config import IceServer, ServerConfig

from .test_forwarding import wait_for
from .test_sdp_offers import answered_ice


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory):
    files = make_media(MediaSpec(duration=4.0, keyframe_interval=1.0), tmp_path_factory.mktemp("restart-media"))
    return (str(files.video), str(files.audio))


class PathWatch:
    """Samples each server transport's remote address and restart count while a call runs."""

    def __init__(self, worker) -> None:
        self.worker = worker
        self.addresses: dict[str, set] = {}
        self.restarts: dict[str, int] = {}
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            for t in list(self.worker.transports):
                if t.connection.remote_addr is not None:
                    self.addresses.setdefault(t.id, set()).add(t.connection.remote_addr)
                self.restarts[t.id] = t.ice_restarts
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        self._task.cancel()


async def test_bots_restart_ice_mid_call_from_new_ports_and_their_streams_continue(server, media) -> None:
    watch = PathWatch(server.worker)
    try:
        config = BotsConfig(url=server.url, count=2, ramp=20, duration=5.0, media=media, seed=5, ice_restart_every=1.5)
        report = await run_bots(config)
    finally:
        watch.stop()
    assert report.failed == 0
    for bot in report.bots:
        assert bot["status"] == "left" and not bot["errors"], bot["errors"]
        assert bot["ice_restarts"] >= 2  # both transports, at least once each
    # Every server transport restarted and its media path moved to the bot's new port.
    assert len(watch.restarts) == 4 and all(n >= 1 for n in watch.restarts.values()), watch.restarts
    assert all(len(addresses) >= 2 for addresses in watch.addresses.values()), watch.addresses
    sent = {(bot["peer_id"], s["kind"]): s for bot in report.bots for s in bot["sent"]}
    for bot in report.bots:
        assert sorted(c["kind"] for c in bot["consumers"]) == ["audio", "video"]
        for consumer in bot["consumers"]:
            source = sent[(consumer["producer_peer"], consumer["kind"])]
            # Loss only around the switches: the streams kept flowing through each restart.
            assert consumer["packets"] >= 0.8 * source["packets"], (consumer, source)
            assert consumer["packets_lost"] <= 0.03 * consumer["expected"], consumer


async def test_bad_ice_restarts_are_refused_and_the_call_carries_on(server) -> None:
    signaling = await SignalingClient.connect(server.url)
    conn, udp = await open_client_connection(on_rtp=lambda _: None, on_rtcp=lambda _: None, on_state=lambda _: None)
    sections = [OfferSection("0", "audio", "sendonly", (OPUS,), ssrc=4242, cname="c", msid=("s", "a"))]

    def offer(ice: IceParameters, version: int) -> str:
        return build_offer(session_id=7, version=version, ice=ice, fingerprint=conn.local_fingerprint,
                           candidate=conn.local_candidate, sections=sections)

    try:
        await signaling.request("join", room="restarts", name="alice")
        first = await signaling.request("publish", sdp=connection_offer(conn, sections, session_id=7))
        answer = parse_answer(first["sdp"])
        # Before the connection is up, new credentials are refused.
        with pytest.raises(SignalingError, match="before the connection is up"):
            await signaling.request("publish", sdp=offer(IceParameters.random(), 2))
        conn.set_remote(answer.ice, answer.fingerprints, answer.dtls_role, answer.candidates)
        assert await wait_for(lambda: conn.state == "connected", 10)
        original = conn.local_ice
        restarted = IceParameters.random()
        second = await signaling.request("publish", sdp=offer(restarted, 3))
        assert second["producers"] == first["producers"]
        new_server_ice = parse_answer(second["sdp"]).ice
        assert new_server_ice != answer.ice
        conn.restart_ice(new_server_ice, parse_answer(second["sdp"]).candidates, local=restarted)
        assert await wait_for(lambda: not conn.ice_restarting, 10)
        bad = [
            (original, "used before"),  # back to the old credentials
            (IceParameters(restarted.ufrag, "x" * 24), "ice-pwd changed but a=ice-ufrag did not"),
        ]
        for ice, error in bad:
            with pytest.raises(SignalingError, match=error):
                await signaling.request("publish", sdp=offer(ice, 4))
        # Nothing changed: the same producer, the restarted credentials still work, the connection is up.
        third = await signaling.request("publish", sdp=offer(restarted, 5))
        assert third["producers"] == first["producers"] and parse_answer(third["sdp"]).ice == new_server_ice
        assert conn.state == "connected"
        [transport] = [t for t in server.worker.transports]
        assert transport.ice_restarts == 1 and transport.state == "connected"
    finally:
        conn.close()
        udp.close()
        await signaling.close()


async def test_whip_and_whep_bots_restart_ice_through_patch_and_media_keeps_flowing(server, media) -> None:
    base = f"http://127.0.0.1:{server.port}"
    watch = PathWatch(server.worker)
    publishing = asyncio.create_task(run_bots(BotsConfig(
        url=f"{base}/whip/patched", mode="whip", duration=5.0, media=media, seed=1, ice_restart_every=1.5)))
    try:
        assert await wait_for(lambda: "patched" in server.worker.routers
                              and len(server.worker.routers["patched"].producers) == 2, 10)
        played = await run_bots(BotsConfig(
            url=f"{base}/whep/patched", mode="whep", duration=3.5, media=media, seed=2, ice_restart_every=1.2))
        published = await publishing
    finally:
        watch.stop()
    (publisher,), (player,) = published.bots, played.bots
    for bot in (publisher, player):
        assert bot["status"] == "left" and bot["error"] is None and bot["errors"] == [], bot
        assert bot["ice_restarts"] >= 1
    assert all(n >= 1 for n in watch.restarts.values()) and len(watch.restarts) == 2, watch.restarts
    assert all(len(addresses) >= 2 for addresses in watch.addresses.values()), watch.addresses
    for consumer in player["consumers"]:
        assert consumer["packets"] > 100 and consumer["packets_lost"] <= 0.03 * consumer["expected"], consumer


async def test_bad_patches_get_clear_errors_and_change_nothing(media) -> None:
    ice_servers = (IceServer("stun:127.0.0.1:3478"), IceServer("turn:127.0.0.1:3478?transport=udp", "user", "pass"))
    running = await start_server(ServerConfig(port=0, rtc_ports=(0, 0), ice_servers=ice_servers))
    base = f"http://127.0.0.1:{running.port}"
    conn, udp = await open_client_connection(on_rtp=lambda _: None, on_rtcp=lambda _: None, on_state=lambda _: None)
    sections = [OfferSection("a0", "audio", "sendonly", (OPUS,), ssrc=99, cname="c", msid=("s", "a"))]
    fragment_type = {"Content-Type": "application/trickle-ice-sdpfrag"}

    def fragment(ice: IceParameters) -> str:
        return (f"a=ice-ufrag:{ice.ufrag}\r\na=ice-pwd:{ice.pwd}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:a0\r\n"
                f"a=candidate:1 1 udp 2130706431 127.0.0.1 {conn.local_candidate[1]} typ host\r\n")

    try:
        async with aiohttp.ClientSession() as http:
            offer = connection_offer(conn, sections, session_id=3)
            async with http.post(f"{base}/whip/bad", data=offer.replace("a=group:BUNDLE a0", "a=group:BUNDLE a0 v1"),
                                 headers={"Content-Type": "application/sdp"}) as response:
                assert response.status == 400 and "names mid 'v1', which no m-line has" in await response.text()
            async with http.post(f"{base}/whip/bad", data=offer, headers={"Content-Type": "application/sdp"}) as response:
                assert response.status == 201
                resource, etag = base + response.headers["Location"], response.headers["ETag"]
                assert response.headers.getall("Link") == [
                    '<stun:127.0.0.1:3478>; rel="ice-server"',
                    '<turn:127.0.0.1:3478?transport=udp>; rel="ice-server"; username="user"; credential="pass"; '
                    'credential-type="password"',
                ]
                assert response.headers["Access-Control-Allow-Origin"] == "*"
                answer = parse_answer(await response.text())
            conn.set_remote(answer.ice, answer.fingerprints, answer.dtls_role, answer.candidates)
            assert await wait_for(lambda: conn.state == "connected", 10)
            [transport] = running.worker.transports
            original = conn.local_ice

            async def patch(body: str, headers: dict, status: int, text: str = "", url: str = resource) -> aiohttp.ClientResponse:
                async with http.patch(url, data=body, headers=headers) as response:
                    got = await response.text()
                    assert response.status == status and text in got, (body, response.status, got)
                    return response

            # Trickled candidates with the current ETag: nothing to do for an ICE-lite server.
            await patch(fragment(original), {**fragment_type, "If-Match": etag}, 204)
            # A restart: new credentials both ways, a new ETag, the call carries on from the same port.
            restarted = IceParameters.random()
            async with http.patch(resource, data=fragment(restarted), headers={**fragment_type, "If-Match": "*"}) as response:
                assert response.status == 200 and response.content_type == "application/trickle-ice-sdpfrag"
                new_etag = response.headers["ETag"]
                answered = parse_ice_fragment(await response.text())
            assert new_etag != etag and answered.ice is not None and answered.ice != answer.ice
            conn.restart_ice(answered.ice, [("127.0.0.1", running.worker.rtc_port)], local=restarted)
            assert await wait_for(lambda: not conn.ice_restarting, 10) and conn.state == "connected"
            bad = [
                ("a=ice-ufrag:abcd\r\n", {**fragment_type, "If-Match": "*"}, 400, "only one of a=ice-ufrag and a=ice-pwd"),
                ("this is not sdp\r\n", {**fragment_type, "If-Match": "*"}, 400, "line 1 is not an SDP line"),
                ("a=candidate:1 1 udp\r\n", {**fragment_type, "If-Match": new_etag}, 400, "malformed a=candidate"),
                ("", {**fragment_type, "If-Match": new_etag}, 400, "the fragment is empty"),
                (fragment(restarted), {"Content-Type": "application/sdp", "If-Match": "*"}, 415, "trickle-ice-sdpfrag"),
                (fragment(restarted), fragment_type, 428, "If-Match"),
                (fragment(restarted), {**fragment_type, "If-Match": etag}, 412, "latest ETag"),
                (fragment(original), {**fragment_type, "If-Match": "*"}, 400, "used before"),
                (fragment(IceParameters(restarted.ufrag, "p" * 24)), {**fragment_type, "If-Match": "*"}, 400,
                 "a=ice-pwd changed but a=ice-ufrag did not"),
            ]
            for body, headers, status, text in bad:
                await patch(body, headers, status, text)
            await patch(fragment(restarted), {**fragment_type, "If-Match": "*"}, 404, "no such",
                        url=f"{base}/whip/bad/0123456789abcdef")
            # Nothing changed: one restart, the restarted credentials, the same transport still connected.
            assert transport.ice_restarts == 1 and transport.remote_ice == restarted and transport.state == "connected"
            assert running.worker.transports == {transport}
            await patch(fragment(restarted), {**fragment_type, "If-Match": new_etag}, 204)
            # CORS preflight and OPTIONS on the endpoint and the resource.
            preflight = {"Origin": "http://page.example", "Access-Control-Request-Method": "POST"}
            async with http.options(f"{base}/whip/bad", headers=preflight) as response:
                assert response.status == 204 and response.headers["Accept-Post"] == "application/sdp"
                assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
                assert len(response.headers.getall("Link")) == 2
            async with http.options(resource, headers=preflight) as response:
                assert response.status == 204 and response.headers["Accept-Patch"] == "application/trickle-ice-sdpfrag"
                assert "ETag" in response.headers["Access-Control-Expose-Headers"]
            async with http.delete(resource) as response:
                assert response.status == 200
    finally:
        conn.close()
        udp.close()
        await running.close()


async def test_an_unbundled_whip_session_restarts_ice_per_transport_and_names_what_it_cannot(server) -> None:
    """Two client connections with an m-line each and no BUNDLE group (webrtcbin's bundle-policy=none), of which
    only the video one connects: a restart of the whole session waits for both, one of the video m-line restarts
    its transport only, and a fragment naming an m-line the session does not have is refused."""
    base = f"http://127.0.0.1:{server.port}"
    conns = [await open_client_connection(on_rtp=lambda _: None, on_rtcp=lambda _: None, on_state=lambda _: None)
             for _ in range(2)]
    (audio, audio_udp), (video, video_udp) = conns
    audio_offer = connection_offer(audio, [OfferSection("a0", "audio", "sendonly", (OPUS,), ssrc=99, cname="c", msid=("s", "a"))],
                                   session_id=4)
    video_offer = connection_offer(video, [OfferSection("v1", "video", "sendonly", (VP8,), ssrc=98, cname="c", msid=("s", "v"))],
                                   session_id=4)
    offer = audio_offer.replace("a=group:BUNDLE a0\r\n", "") + video_offer.split("a=msid-semantic: WMS *\r\n", 1)[1]
    fragment_type = {"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": "*"}

    def fragment(ice: IceParameters, mid: str | None) -> str:
        lines = ["m=video 9 UDP/TLS/RTP/SAVPF 96", f"a=mid:{mid}"] if mid else []
        return "\r\n".join([*lines, f"a=ice-ufrag:{ice.ufrag}", f"a=ice-pwd:{ice.pwd}"]) + "\r\n"

    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/whip/split", data=offer, headers={"Content-Type": "application/sdp"}) as response:
                assert response.status == 201, await response.text()
                resource, text = base + response.headers["Location"], await response.text()
            answer, credentials = parse_answer(text), answered_ice(text)
            assert "a=group:BUNDLE" not in text and credentials["a0"] != credentials["v1"]
            video.set_remote(credentials["v1"], answer.fingerprints, answer.dtls_role, answer.candidates)
            assert await wait_for(lambda: video.state == "connected", 10)
            [peer] = server.worker.routers["split"].peers.values()
            audio_transport, video_transport = peer.send_transports
            assert (audio_transport.mids, video_transport.mids) == (("a0",), ("v1",))
            restarted = IceParameters.random()
            for body, status, text in [
                (fragment(restarted, None), 400, "ICE restart before the connection is up"),
                (fragment(restarted, "x9"), 400, "the fragment's m-line 'x9' is on no transport of this session"),
            ]:
                async with http.patch(resource, data=body, headers=fragment_type) as response:
                    assert response.status == status and text in await response.text()
            assert audio_transport.ice_restarts == video_transport.ice_restarts == 0
            async with http.patch(resource, data=fragment(restarted, "v1"), headers=fragment_type) as response:
                assert response.status == 200
                answered = parse_ice_fragment(await response.text())
            assert list(answered.credentials) == ["v1"] and answered.ice == video_transport.connection.local_ice
            video.restart_ice(answered.ice, [("127.0.0.1", server.worker.rtc_port)], local=restarted)
            assert await wait_for(lambda: not video.ice_restarting, 10) and video.state == "connected"
            assert (audio_transport.ice_restarts, video_transport.ice_restarts) == (0, 1)
            assert audio_transport.remote_ice == audio.local_ice and video_transport.remote_ice == restarted
    finally:
        for conn, udp in conns:
            conn.close()
            udp.close()
