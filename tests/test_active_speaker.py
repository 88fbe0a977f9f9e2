"""The active-speaker rules on scripted speech: turns, a cough, silence, pauses, overlap, leaving."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

from sfuctl.client.offer import (
    AUDIO_LEVEL_EXTENSION_ID,
    MID_EXTENSION_ID,
    OPUS,
    OfferSection,
    connection_offer,
    parse_answer,
)
from sfuctl.client.signaling import SignalingClient
from sfuctl.rtc.connection import open_client_connection
from sfuctl.rtc.rtp import build_extension_block, build_packet
from sfuctl.rtc.sdp import AUDIO_LEVEL_URI
from sfuctl.server.active_speaker import STEP, ActiveSpeakerObserver



def run(script: list[dict[str, float]]) -> list[tuple[float, str]]:
    """Feed one step per entry; the (time, peer) of every change of speaker."""
    observer = ActiveSpeakerObserver()
    changes = []
    for step, speech in enumerate(script):
        winner = observer.update(speech)
        if winner is not None:
            changes.append((round((step + 1) * STEP, 1), winner))
    return changes


def seconds(s: float) -> int:
    return round(s / STEP)


def test_turns_are_named_within_a_second_and_a_cough_and_a_silent_peer_never() -> None:
    script = []
    for turn in range(4):  # alice and bob take turns of 3 s; carol coughs (200 ms, loud) in each turn
        talker = "alice" if turn % 2 == 0 else "bob"
        for step in range(seconds(3)):
            cough = 1.0 if seconds(1.0) <= step < seconds(1.2) else 0.0
            script.append({"alice": 0.0, "bob": 0.0, "carol": cough, "dave": 0.0, talker: 1.0})
    changes = run(script)
    assert [peer for _, peer in changes] == ["alice", "bob", "alice", "bob"]
    for turn, (at, _) in enumerate(changes):
        assert 0 < at - 3 * turn <= 1.0, changes


def test_pauses_between_words_keep_the_floor() -> None:
    # alice speaks in 0.5 s spurts with 0.3 s gaps; bob mutters 0.2 s now and then
    script = []
    for step in range(seconds(10)):
        alice = 1.0 if step % 8 < 5 else 0.0
        bob = 1.0 if step % 25 in (3, 4) else 0.0
        script.append({"alice": alice, "bob": bob})
    assert [peer for _, peer in run(script)] == ["alice"]


def test_overlap_does_not_move_the_floor_from_a_long_speaker_but_a_takeover_does() -> None:
    long_turn = [{"alice": 1.0, "bob": 0.0}] * seconds(5)
    interjection = [{"alice": 0.7, "bob": 1.0}] * seconds(1)  # bob says "yes, yes" while alice goes on
    assert [p for _, p in run(long_turn + interjection + long_turn)] == ["alice"]
    takeover = [{"alice": 0.0, "bob": 1.0}] * seconds(2)  # alice stops, bob carries on
    assert [p for _, p in run(long_turn + interjection + takeover)] == ["alice", "bob"]


def test_silence_names_nobody_and_a_speaker_who_leaves_frees_the_floor() -> None:
    assert run([{"alice": 0.0, "bob": 0.0}] * seconds(5)) == []
    observer = ActiveSpeakerObserver()
    for _ in range(seconds(2)):
        observer.update({"alice": 1.0, "bob": 0.0})
    assert observer.dominant == "alice"
    observer.update({"bob": 0.0})  # alice left
    assert observer.dominant is None
    assert observer.levels("alice") == (0.0, 0.0, 0.0)


# -- through a real server: publishers sending levels, the room told who speaks ------------------------------
async def speak(url: str, room: str, name: str, loud: Callable[[float], bool], seconds: float) -> SignalingClient:
    """Join and publish Opus-sized packets every 20 ms whose level is -30 dBov while `loud(t)`, else -110."""
    signaling = await SignalingClient.connect(url)
    await signaling.request("join", room=room, name=name)
    connected = asyncio.get_running_loop().create_future()
    conn, udp = await open_client_connection(
        on_rtp=lambda d: None, on_rtcp=lambda d: None,
        on_state=lambda s: connected.done() or s != "connected" or connected.set_result(None),
    )  # fmt: skip
    ssrc = random.randint(1, 0xFFFFFFFF)
    section = OfferSection("0", "audio", "sendonly", (OPUS,), ssrc=ssrc, cname=name)
    answer = parse_answer((await signaling.request("publish", sdp=connection_offer(conn, [section], session_id=1)))["sdp"])
    assert answer.media["0"].extensions.get(AUDIO_LEVEL_URI) == AUDIO_LEVEL_EXTENSION_ID
    conn.set_remote(answer.ice, answer.fingerprints, answer.dtls_role, answer.candidates)  # type: ignore[arg-type]
    await asyncio.wait_for(connected, 10)

    async def send() -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for seq in range(int(seconds / 0.02)):
            level = 30 if loud(loop.time() - start) else 110
            block = build_extension_block([(MID_EXTENSION_ID, b"0"), (AUDIO_LEVEL_EXTENSION_ID, bytes([0x80 | level]))])
            conn.send_rtp(build_packet(OPUS.payload_type, seq, seq * 960, ssrc, bytes(60), False, block))
            await asyncio.sleep(max(0.0, start + (seq + 1) * 0.02 - loop.time()))
        conn.close()
        udp.close()

    signaling.sender = asyncio.create_task(send())  # type: ignore[attr-defined]
    return signaling


async def test_the_server_names_each_talker_in_turn_and_never_the_cougher_or_the_silent(server, record_property) -> None:
    watcher = await SignalingClient.connect(server.url)
    await watcher.request("join", room="talk", name="watcher")
    turn = 2.5

    def talks(first: bool) -> Callable[[float], bool]:
        return lambda t: (t < turn) == first

    def coughs(t: float) -> bool:
        return any(start <= t < start + 0.2 for start in (1.2, turn + 1.2))

    heard: list[tuple[float, str, dict]] = []

    async def listen() -> None:
        while True:
            method, params = await watcher.notifications.get()
            heard.append((time.monotonic(), method, params))

    listener = asyncio.create_task(listen())
    started = time.monotonic()
    peers = {}
    for name, loud in (("alice", talks(True)), ("bob", talks(False)), ("carol", coughs), ("dave", lambda t: False)):
        peers[name] = await speak(server.url, "talk", name, loud, 2 * turn)
    await asyncio.gather(*(p.sender for p in peers.values()))  # type: ignore[attr-defined]
    await asyncio.sleep(0.5)
    listener.cancel()
    ids = {params["peer"]["id"]: params["peer"]["name"] for _, method, params in heard if method == "peerJoined"}
    named = [(round(t - started, 2), ids.get(p["peerId"])) for t, method, p in heard if method == "activeSpeaker"]
    record_property("active_speaker_changes", named)
    speakers = [name for _, name in named if name is not None]
    assert speakers[:2] == ["alice", "bob"], named
    assert "carol" not in speakers and "dave" not in speakers and "watcher" not in speakers
    for client in (*peers.values(), watcher):
        await client.close()
