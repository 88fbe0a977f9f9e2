"""ICE restarts (RFC 8445 section 9): new credentials and a new local port mid-call; the streams carry on."""

from __future__ import annotations

import asyncio

import pytest

from sfuctl.bots.config import BotsConfig
from sfuctl.bots.runner import run_bots
from sfuctl.client.offer import OPUS, OfferSection, build_offer, connection_offer, parse_answer
from sfuctl.client.signaling import SignalingClient, SignalingError
from sfuctl.media import MediaSpec, make_media
from sfuctl.rtc.connection import open_client_connection
from sfuctl.rtc.ice import IceParameters

from .test_forwarding import wait_for


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
