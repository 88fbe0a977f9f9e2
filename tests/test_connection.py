"""ICE + DTLS + SRTP connections over real UDP sockets on 127.0.0.1, and aiortc interop."""

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aioice.ice
import pytest
from aioice import stun
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack
from aiortc.sdp import SessionDescription

from sfuctl.rtc.connection import Connection, open_client_connection
from sfuctl.rtc.dtls import SRTP_AEAD_AES_128_GCM, SRTP_AES128_CM_SHA1_80, DtlsCertificate, SrtpProfile
from sfuctl.rtc.ice import IceParameters



def rtp_packet(seq: int) -> bytes:
    return bytes([0x80, 96]) + struct.pack("!HII", seq, 3000 + seq, 0x11223344) + b"rtp payload"


RTP = rtp_packet(1)
RTCP = bytes([0x81, 201]) + struct.pack("!HI", 7, 0x55667788) + struct.pack("!IIIIII", 0x11223344, 0, 0, 0, 0, 0)
SERVER_CERT = DtlsCertificate.generate()
CLIENT_CERT = DtlsCertificate.generate()


class UdpEndpoint(asyncio.DatagramProtocol):
    """A UDP socket on 127.0.0.1 feeding one Connection and recording what it sends."""

    def __init__(self) -> None:
        self.connection: Connection | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.sent: list[tuple[bytes, Any]] = []
        self.received: list[tuple[bytes, Any]] = []
        self.drop_stun_out = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append((data, addr))
        if self.connection is not None:
            self.connection.datagram_received(data, addr)

    def send(self, data: bytes, addr: Any) -> None:
        if self.drop_stun_out and data[0] < 4:
            return
        self.sent.append((data, addr))
        assert self.transport is not None
        self.transport.sendto(data, addr)

    @property
    def addr(self) -> tuple[str, int]:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[:2]


class Peer:
    """A Connection on its own UDP endpoint with recorded callbacks."""

    def __init__(self, endpoint: UdpEndpoint, connection: Connection) -> None:
        self.endpoint = endpoint
        self.connection = connection
        self.rtp: list[bytes] = []
        self.rtcp: list[bytes] = []
        self.states: list[str] = []

    @property
    def remote(self) -> tuple[IceParameters, list[tuple[str, str]]]:
        algorithm, value = self.connection.local_fingerprint.split(" ")
        return self.connection.local_ice, [(algorithm, value)]


PeerFactory = Callable[..., Awaitable[Peer]]


@pytest.fixture
async def make_peer() -> AsyncIterator[PeerFactory]:
    peers: list[Peer] = []

    async def factory(role: str, certificate: DtlsCertificate = SERVER_CERT, **kwargs: Any) -> Peer:
        loop = asyncio.get_running_loop()
        _, endpoint = await loop.create_datagram_endpoint(UdpEndpoint, local_addr=("127.0.0.1", 0))
        peer: Peer

        def on_state(state: str) -> None:
            peer.states.append(state)

        connection = Connection(
            role,  # type: ignore[arg-type]
            certificate,
            endpoint.send,
            lambda data: peer.rtp.append(data),
            lambda data: peer.rtcp.append(data),
            on_state,
            **kwargs,
        )
        peer = Peer(endpoint, connection)
        endpoint.connection = connection
        peers.append(peer)
        return peer

    yield factory
    for peer in peers:
        peer.connection.close()
        assert peer.endpoint.transport is not None
        peer.endpoint.transport.close()


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


async def connect(
    make_peer: PeerFactory,
    server_dtls_role: str = "server",
    *,
    server_kwargs: dict[str, Any] | None = None,
    client_kwargs: dict[str, Any] | None = None,
) -> tuple[Peer, Peer]:
    server = await make_peer("lite", SERVER_CERT, **(server_kwargs or {}))
    client = await make_peer("controlling", CLIENT_CERT, **(client_kwargs or {}))
    client_role = "client" if server_dtls_role == "server" else "server"
    server.connection.set_remote(*client.remote, server_dtls_role)  # type: ignore[arg-type]
    client.connection.set_remote(*server.remote, client_role, [server.endpoint.addr])  # type: ignore[arg-type]
    await wait_until(lambda: server.connection.state == client.connection.state == "connected")
    return server, client


async def assert_media_flows(server: Peer, client: Peer, seq: int = 1) -> None:
    """One RTP packet (sequence number `seq`) and one RTCP packet each way, byte-exact."""
    packet = rtp_packet(seq)
    rtp_before, rtcp_before = len(server.rtp), len(client.rtcp)
    client.connection.send_rtp(packet)
    client.connection.send_rtcp(RTCP)
    server.connection.send_rtp(packet)
    server.connection.send_rtcp(RTCP)
    await wait_until(lambda: len(server.rtcp) > rtcp_before and len(client.rtcp) > rtcp_before)
    await wait_until(lambda: len(server.rtp) > rtp_before and len(client.rtp) > rtp_before)
    assert server.rtp[-1] == client.rtp[-1] == packet
    assert server.rtcp[-1] == client.rtcp[-1] == RTCP


def pending_timers(loop: asyncio.AbstractEventLoop) -> list[asyncio.TimerHandle]:
    return [h for h in loop._scheduled if not h.cancelled()]  # type: ignore[attr-defined]


# --- connect and media ---------------------------------------------------------------------


@pytest.mark.parametrize("profile", [SRTP_AEAD_AES_128_GCM, SRTP_AES128_CM_SHA1_80], ids=lambda p: p.name)
@pytest.mark.parametrize("server_dtls_role", ["server", "client"])
async def test_connect_and_round_trip_media(make_peer: PeerFactory, server_dtls_role: str, profile: SrtpProfile) -> None:
    server, client = await connect(
        make_peer, server_dtls_role, server_kwargs={"srtp_profiles": (profile,)}
    )
    assert server.states == client.states == ["connecting", "connected"]
    assert server.connection.remote_addr == client.endpoint.addr
    assert client.connection.remote_addr == server.endpoint.addr
    assert server.connection.srtp_profile == client.connection.srtp_profile == profile.name
    for seq in (1, 2, 3):
        await assert_media_flows(server, client, seq)
    assert len(server.rtp) == len(client.rtp) == 3
    for peer in (server, client):
        c = peer.connection
        assert c.srtp_errors == 0
        assert c.packets_sent == len(peer.endpoint.sent)
        assert c.bytes_sent == sum(len(d) for d, _ in peer.endpoint.sent)
        assert c.packets_received == len(peer.endpoint.received)
        assert c.bytes_received == sum(len(d) for d, _ in peer.endpoint.received)


async def test_default_profile_is_aes_gcm(make_peer: PeerFactory) -> None:
    server, client = await connect(make_peer)
    assert server.connection.srtp_profile == "SRTP_AEAD_AES_128_GCM"


async def test_open_client_connection(make_peer: PeerFactory) -> None:
    server = await make_peer("lite")
    states: list[str] = []
    received: list[bytes] = []
    client, transport = await open_client_connection(on_rtp=received.append, on_rtcp=received.append, on_state=states.append)
    try:
        assert client.local_candidate == transport.get_extra_info("sockname")[:2]
        assert client.local_candidate[0] == "127.0.0.1"
        algorithm, value = client.local_fingerprint.split(" ")
        server.connection.set_remote(client.local_ice, [(algorithm, value)], "client")
        client.set_remote(*server.remote, "server", [server.endpoint.addr])
        await wait_until(lambda: states == ["connecting", "connected"] and server.connection.state == "connected")
        server.connection.send_rtp(RTP)
        await wait_until(lambda: received == [RTP])
    finally:
        client.close()
        transport.close()


async def test_client_hello_before_lite_set_remote_is_kept(make_peer: PeerFactory) -> None:
    # The server sent the offer; the client answers and connects before the server has
    # processed the answer: its ClientHello arrives first and must not need a retransmission.
    server = await make_peer("lite")
    client = await make_peer("controlling", CLIENT_CERT)
    client.connection.set_remote(*server.remote, "client", [server.endpoint.addr])
    await wait_until(lambda: any(d[0] == 22 for d, _ in client.endpoint.sent))
    assert server.connection.state == "new"
    loop = asyncio.get_running_loop()
    started = loop.time()
    server.connection.set_remote(*client.remote, "server")
    await wait_until(lambda: server.connection.state == client.connection.state == "connected")
    assert loop.time() - started < 0.5
    assert sum(1 for d, _ in client.endpoint.sent if d[0] == 22) == 2  # ClientHello, then Certificate... flight


# --- invalid input -------------------------------------------------------------------------


def binding_request(username: str, pwd: str) -> bytes:
    message = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    message.attributes["USERNAME"] = username
    message.attributes["PRIORITY"] = 1
    message.attributes["ICE-CONTROLLING"] = 1
    message.add_message_integrity(pwd.encode())
    return bytes(message)


@pytest.mark.parametrize("case", ["wrong-password", "unknown-username", "bad-fingerprint", "truncated"])
async def test_invalid_binding_request_is_ignored(make_peer: PeerFactory, case: str) -> None:
    server = await make_peer("lite")
    client = await make_peer("controlling")
    server.connection.set_remote(*client.remote, "server")
    ice = server.connection.local_ice
    valid = binding_request(f"{ice.ufrag}:abcd", ice.pwd)
    data = {
        "wrong-password": binding_request(f"{ice.ufrag}:abcd", "w" * 24),
        "unknown-username": binding_request(f"zz{ice.ufrag}:abcd", ice.pwd),
        "bad-fingerprint": valid[:-1] + bytes([valid[-1] ^ 1]),
        "truncated": valid[:-12],
    }[case]
    assert client.endpoint.transport is not None
    client.endpoint.transport.sendto(data, server.endpoint.addr)
    await asyncio.sleep(0.2)
    assert client.endpoint.received == []
    assert server.states == ["connecting"]
    assert server.connection.remote_addr is None
    assert server.connection.packets_sent == 0
    # Control: the same socket gets an answer to a valid request.
    client.endpoint.transport.sendto(valid, server.endpoint.addr)
    await wait_until(lambda: len(client.endpoint.received) == 1)
    assert server.connection.remote_addr == client.endpoint.addr


async def test_dtls_fingerprint_mismatch_fails(make_peer: PeerFactory) -> None:
    server = await make_peer("lite")
    client = await make_peer("controlling", CLIENT_CERT)
    server.connection.set_remote(client.connection.local_ice, [("sha-256", "AB:" * 31 + "AB")], "client")
    client.connection.set_remote(*server.remote, "server", [server.endpoint.addr])
    await wait_until(lambda: server.connection.state == client.connection.state == "failed")
    assert server.states == client.states == ["connecting", "failed"]
    assert server.connection.timers == client.connection.timers == []


async def test_garbage_of_every_class_does_not_break_session(make_peer: PeerFactory) -> None:
    server, client = await connect(make_peer)
    stranger = await make_peer("controlling")
    assert client.endpoint.transport is not None and stranger.endpoint.transport is not None
    for first in range(256):
        for size in (1, 2, 13, 40, 300):
            garbage = bytes([first]) + bytes((first * 7 + i) % 256 for i in range(size - 1))
            client.endpoint.transport.sendto(garbage, server.endpoint.addr)
            stranger.endpoint.transport.sendto(garbage, server.endpoint.addr)
            stranger.endpoint.transport.sendto(garbage, client.endpoint.addr)
        await asyncio.sleep(0.001)
    await wait_until(lambda: len(server.endpoint.received) >= 2 * 256 * 5)
    await assert_media_flows(server, client)
    assert server.states == client.states == ["connecting", "connected"]
    assert server.rtp == client.rtp == [RTP]
    # SRTP-class garbage from the selected address was unprotected and rejected.
    assert server.connection.srtp_errors > 0
    assert client.connection.srtp_errors == 0


async def test_media_from_other_address_and_replays_are_dropped(make_peer: PeerFactory) -> None:
    server, client = await connect(make_peer)
    client.connection.send_rtp(RTP)
    await wait_until(lambda: server.rtp == [RTP])
    protected, _ = client.endpoint.sent[-1]
    stranger = await make_peer("controlling")
    assert stranger.endpoint.transport is not None and client.endpoint.transport is not None
    stranger.endpoint.transport.sendto(protected, server.endpoint.addr)
    await wait_until(lambda: len(server.endpoint.received) > 0 and server.endpoint.received[-1][0] == protected)
    assert server.rtp == [RTP] and server.connection.srtp_errors == 0
    client.endpoint.transport.sendto(protected, server.endpoint.addr)
    await wait_until(lambda: server.connection.srtp_errors == 1)
    assert server.rtp == [RTP]


async def test_media_before_dtls_and_sends_before_connect_are_dropped(make_peer: PeerFactory) -> None:
    server = await make_peer("lite")
    client = await make_peer("controlling")
    server.connection.set_remote(*client.remote, "server")
    server.connection.send_rtp(RTP)
    server.connection.send_rtcp(RTCP)
    assert server.endpoint.sent == []
    assert client.endpoint.transport is not None
    client.endpoint.transport.sendto(RTP, server.endpoint.addr)
    await wait_until(lambda: server.connection.packets_received == 1)
    assert server.rtp == [] and server.connection.srtp_errors == 0


# --- consent, close, timeouts ---------------------------------------------------------------


@pytest.mark.parametrize("keepalive", ["binding-requests", "srtp"])
async def test_lite_consent_lost_after_timeout(make_peer: PeerFactory, keepalive: str) -> None:
    server, client = await connect(make_peer, server_kwargs={"consent_timeout": 1.5})
    client.endpoint.drop_stun_out = True
    loop = asyncio.get_running_loop()
    ice = server.connection.local_ice
    assert client.endpoint.transport is not None
    # Fresh checks (or authenticated media, as FFmpeg sends no checks) keep it alive past the timeout...
    for seq in range(4):
        if keepalive == "srtp":
            client.connection.send_rtp(rtp_packet(seq))
        else:
            client.endpoint.transport.sendto(binding_request(f"{ice.ufrag}:x", ice.pwd), server.endpoint.addr)
        await asyncio.sleep(0.5)
    assert server.connection.state == "connected"
    # ...and without them it is lost.
    last_sent = loop.time() - 0.5
    await wait_until(lambda: server.connection.state == "failed", timeout=5.0)
    assert 1.4 <= loop.time() - last_sent <= 3.7
    assert server.states == ["connecting", "connected", "failed"]
    assert server.connection.timers == []
    server.connection.send_rtp(RTP)
    assert client.rtp == []


async def test_controlling_consent_lost_when_server_stops_answering(make_peer: PeerFactory) -> None:
    server, client = await connect(make_peer, client_kwargs={"consent_timeout": 1.0})
    server.endpoint.drop_stun_out = True
    await wait_until(lambda: client.connection.state == "failed", timeout=3.0)
    assert client.states == ["connecting", "connected", "failed"]
    assert client.connection.timers == []


@pytest.mark.parametrize("closer", ["client", "server"])
async def test_close_sends_close_notify_and_leaves_nothing(make_peer: PeerFactory, closer: str) -> None:
    server, client = await connect(make_peer)
    first, second = (client, server) if closer == "client" else (server, client)
    first.connection.close()
    first.connection.close()
    assert first.endpoint.sent[-1][0][0] == 21  # DTLS alert record (close_notify)
    await wait_until(lambda: second.connection.state == "closed")
    assert first.states == second.states == ["connecting", "connected", "closed"]
    second.connection.close()
    assert second.states == ["connecting", "connected", "closed"]
    for peer in (server, client):
        assert peer.connection.timers == []
        assert peer.endpoint.transport is not None
        peer.endpoint.transport.close()
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert pending_timers(loop) == []


async def test_timers_are_running_while_connected(make_peer: PeerFactory) -> None:
    server, client = await connect(make_peer)
    # Lite: the consent check; controlling: the next consent request.
    assert len(server.connection.timers) == 1
    assert len(client.connection.timers) == 1
    assert len(pending_timers(asyncio.get_running_loop())) >= 2


async def test_controlling_connect_timeout(make_peer: PeerFactory) -> None:
    loop = asyncio.get_running_loop()
    transport, silent = await loop.create_datagram_endpoint(UdpEndpoint, local_addr=("127.0.0.1", 0))
    client = await make_peer("controlling", connect_timeout=0.5)
    started = loop.time()
    client.connection.set_remote(IceParameters.random(), [("sha-256", "AA")], "client", [silent.addr])
    await wait_until(lambda: client.connection.state == "failed", timeout=2.0)
    assert 0.45 <= loop.time() - started <= 1.0
    assert client.states == ["connecting", "failed"]
    assert client.connection.timers == []
    assert len(silent.received) >= 4  # 0, 50, 150, 350 ms
    transport.close()


async def test_lite_connect_timeout(make_peer: PeerFactory) -> None:
    server = await make_peer("lite", connect_timeout=0.3)
    server.connection.set_remote(IceParameters.random(), [("sha-256", "AA:BB")], "server")
    await wait_until(lambda: server.connection.state == "failed", timeout=2.0)
    assert server.states == ["connecting", "failed"]
    assert server.connection.timers == []


async def test_close_before_set_remote_and_misuse(make_peer: PeerFactory) -> None:
    peer = await make_peer("lite")
    peer.connection.close()
    peer.connection.close()
    assert peer.states == ["closed"]
    with pytest.raises(ValueError, match="^remote description already set$"):
        peer.connection.set_remote(IceParameters.random(), [("sha-256", "AA")], "client")
    with pytest.raises(ValueError, match="^ICE role must be 'lite' or 'controlling'$"):
        Connection("full", SERVER_CERT, peer.endpoint.send, print, print, print)  # type: ignore[arg-type]


# --- interoperability with aiortc -----------------------------------------------------------


@pytest.fixture
def aiortc_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """aioice gathers host candidates from get_host_addresses(), which skips 127.0.0.1."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


def answer_sdp(server: Peer, setup: str, payload_type: int) -> str:
    ice = server.connection.local_ice
    host, port = server.endpoint.addr
    return "\r\n".join(
        [
            "v=0",
            f"o=- 1 1 IN IP4 {host}",
            "s=-",
            "t=0 0",
            "a=group:BUNDLE 0",
            "a=ice-lite",
            f"m=audio {port} UDP/TLS/RTP/SAVPF {payload_type}",
            f"c=IN IP4 {host}",
            "a=mid:0",
            "a=recvonly",
            "a=rtcp-mux",
            f"a=ice-ufrag:{ice.ufrag}",
            f"a=ice-pwd:{ice.pwd}",
            f"a=fingerprint:{server.connection.local_fingerprint}",
            f"a=setup:{setup}",
            f"a=rtpmap:{payload_type} opus/48000/2",
            f"a=candidate:1 1 udp 2130706431 {host} {port} typ host",
            "a=end-of-candidates",
            "",
        ]
    )


@pytest.mark.parametrize("setup", ["active", "passive"])
async def test_aiortc_offerer_connects_to_lite_answerer(
    make_peer: PeerFactory, aiortc_on_loopback: None, setup: str
) -> None:
    server = await make_peer("lite")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTrack(AudioStreamTrack())
        await pc.setLocalDescription(await pc.createOffer())
        offer = SessionDescription.parse(pc.localDescription.sdp)
        media = offer.media[0]
        assert [(c.ip, c.type) for c in media.ice_candidates] == [("127.0.0.1", "host")]
        server.connection.set_remote(
            IceParameters(media.ice.usernameFragment, media.ice.password),
            [(f.algorithm, f.value) for f in media.dtls.fingerprints],
            "client" if setup == "active" else "server",
        )
        opus = next(c for c in media.rtp.codecs if c.name == "opus")
        await pc.setRemoteDescription(RTCSessionDescription(answer_sdp(server, setup, opus.payloadType), "answer"))
        await wait_until(lambda: pc.connectionState == "connected" and server.connection.state == "connected")
        # aiortc's audio arrives decrypted: RTP version 2, the offered SSRC and payload type.
        await wait_until(lambda: len(server.rtp) >= 3)
        packet = server.rtp[-1]
        assert packet[0] >> 6 == 2 and packet[1] & 0x7F == opus.payloadType
        assert struct.unpack_from("!I", packet, 8)[0] == media.ssrc[0].ssrc
        assert server.connection.remote_addr == (media.ice_candidates[0].ip, media.ice_candidates[0].port)
    finally:
        await pc.close()
    await wait_until(lambda: server.connection.state == "closed")
    assert server.states == ["connecting", "connected", "closed"]


async def test_aiortc_answerer_connects_to_lite_offerer(make_peer: PeerFactory, aiortc_on_loopback: None) -> None:
    server = await make_peer("lite")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        offer = answer_sdp(server, "actpass", 111).replace("a=recvonly", "a=sendonly")
        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        answer = SessionDescription.parse(pc.localDescription.sdp)
        media = answer.media[0]
        assert media.dtls.role in ("client", "server")
        server.connection.set_remote(
            IceParameters(media.ice.usernameFragment, media.ice.password),
            [(f.algorithm, f.value) for f in media.dtls.fingerprints],
            "server" if media.dtls.role == "client" else "client",
        )
        await wait_until(lambda: pc.connectionState == "connected" and server.connection.state == "connected")
        # Our SRTP reaches aiortc: its receiver reports on our SSRC in an RTCP receiver report.
        for seq in range(10):
            header = struct.pack("!BBHII", 0x80, 111, seq, seq * 960, 0xABCDEF01)
            server.connection.send_rtp(header + b"\xf8\xff\xfe")
            await asyncio.sleep(0.02)
        await wait_until(lambda: any(p[1] == 201 and p[8:12] == b"\xab\xcd\xef\x01" for p in server.rtcp))
    finally:
        await pc.close()
    await wait_until(lambda: server.connection.state == "closed")
