"""DTLS-SRTP endpoints: certificates, handshake in both roles, fingerprints, SRTP keys, close."""

import asyncio
import datetime
import re
import struct
from collections.abc import Callable

import pylibsrtp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sfuctl.rtc.dtls import (
    SRTP_AEAD_AES_128_GCM,
    SRTP_AES128_CM_SHA1_80,
    SRTP_PROFILES,
    DtlsCertificate,
    DtlsEndpoint,
    SrtpProfile,
    certificate_fingerprint,
    normalize_fingerprints,
    split_records,
)

RTP = bytes([0x80, 96]) + struct.pack("!HII", 7, 1000, 0xCAFE) + b"hello rtp"
RTCP = bytes([0x80, 200]) + struct.pack("!HI", 6, 0xCAFE) + bytes(20)


def rsa_certificate() -> DtlsCertificate:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "rsa-peer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return DtlsCertificate(key, cert)


def sdp_fingerprint(certificate: DtlsCertificate) -> list[tuple[str, str]]:
    algorithm, value = certificate.fingerprint.split(" ")
    return [(algorithm, value)]


class Pair:
    """Two endpoints whose datagrams are delivered on the next loop iteration."""

    def __init__(
        self,
        client_cert: DtlsCertificate,
        server_cert: DtlsCertificate,
        *,
        client_profiles: tuple[SrtpProfile, ...] = SRTP_PROFILES,
        server_profiles: tuple[SrtpProfile, ...] = SRTP_PROFILES,
        client_expects: list[tuple[str, str]] | None = None,
        drop: Callable[[str, int], bool] = lambda side, index: False,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.states: dict[str, list[str]] = {"client": [], "server": []}
        self.sent: dict[str, list[bytes]] = {"client": [], "server": []}
        self.client = DtlsEndpoint(
            client_cert,
            "client",
            client_expects if client_expects is not None else sdp_fingerprint(server_cert),
            lambda data: self._deliver("client", data),
            loop,
            on_state=self.states["client"].append,
            srtp_profiles=client_profiles,
        )
        self.server = DtlsEndpoint(
            server_cert,
            "server",
            sdp_fingerprint(client_cert),
            lambda data: self._deliver("server", data),
            loop,
            on_state=self.states["server"].append,
            srtp_profiles=server_profiles,
        )
        self._loop = loop
        self._drop = drop

    def _deliver(self, side: str, data: bytes) -> None:
        index = len(self.sent[side])
        self.sent[side].append(data)
        if self._drop(side, index):
            return
        peer = self.server if side == "client" else self.client
        self._loop.call_soon(peer.feed, data)

    def start(self) -> None:
        self.server.start()
        self.client.start()

    async def settle(self, timeout: float = 5.0) -> None:
        """Wait until neither side is still connecting."""
        deadline = self._loop.time() + timeout
        while "connecting" in (self.client.state, self.server.state) and self._loop.time() < deadline:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.01)


def assert_srtp_works(pair: Pair) -> None:
    for tx, rx in [(pair.client, pair.server), (pair.server, pair.client)]:
        assert tx.srtp_tx is not None and rx.srtp_rx is not None
        assert rx.srtp_rx.unprotect(tx.srtp_tx.protect(RTP)) == RTP
        assert rx.srtp_rx.unprotect_rtcp(tx.srtp_tx.protect_rtcp(RTCP)) == RTCP


# --- certificates ---------------------------------------------------------------------------


def test_generated_certificate_is_ecdsa_p256_with_sha256_fingerprint() -> None:
    certificate = DtlsCertificate.generate()
    assert isinstance(certificate.key, ec.EllipticCurvePrivateKey)
    assert certificate.key.curve.name == "secp256r1"
    assert isinstance(certificate.cert.signature_hash_algorithm, hashes.SHA256)
    assert re.fullmatch(r"sha-256 ([0-9A-F]{2}:){31}[0-9A-F]{2}", certificate.fingerprint)
    digest = certificate.cert.fingerprint(hashes.SHA256()).hex().upper()
    assert certificate.fingerprint.replace(":", "") == "sha-256 " + digest
    assert DtlsCertificate.generate().fingerprint != certificate.fingerprint


def test_default_certificate_is_cached() -> None:
    assert DtlsCertificate.default() is DtlsCertificate.default()


def test_normalize_fingerprints_keeps_supported_hashes() -> None:
    assert normalize_fingerprints([("SHA-256", "ab:cd"), ("md5", "00"), ("sha-1", "EF")]) == [
        ("sha-256", "AB:CD"),
        ("sha-1", "EF"),
    ]


@pytest.mark.parametrize("fingerprints", [[], [("md5", "00:11")], [("sha-224", "AA")]])
def test_normalize_fingerprints_rejects_unsupported(fingerprints: list[tuple[str, str]]) -> None:
    with pytest.raises(ValueError, match=r"^no supported DTLS fingerprint \(sha-1, sha-256, sha-384 or sha-512\)$"):
        normalize_fingerprints(fingerprints)


def record(length: int, content_type: int = 22) -> bytes:
    return bytes([content_type, 0xFE, 0xFD]) + bytes(8) + length.to_bytes(2, "big") + bytes(length)


@pytest.mark.parametrize(
    ("lengths", "mtu", "expected"),
    [
        ([100], 1200, [[100]]),
        ([100, 200, 300], 1200, [[100, 200, 300]]),
        ([500, 500, 500], 1200, [[500, 500], [500]]),
        ([1300, 10], 1200, [[1300], [10]]),
        ([10, 1300], 1200, [[10], [1300]]),
        ([587, 587], 1200, [[587, 587]]),
        ([588, 587], 1200, [[588], [587]]),
    ],
)
def test_split_records_packs_whole_records(lengths: list[int], mtu: int, expected: list[list[int]]) -> None:
    data = b"".join(record(n) for n in lengths)
    datagrams = split_records(data, mtu)
    assert b"".join(datagrams) == data
    assert datagrams == [b"".join(record(n) for n in group) for group in expected]


def test_split_records_keeps_trailing_garbage() -> None:
    assert split_records(record(5) + b"\x16\xfe") == [record(5) + b"\x16\xfe"]


# --- handshake --------------------------------------------------------------------------------


async def test_handshake_offers_gcm_first_and_derives_matching_keys() -> None:
    pair = Pair(DtlsCertificate.generate(), DtlsCertificate.generate())
    pair.start()
    await pair.settle()
    assert pair.states == {"client": ["connecting", "connected"], "server": ["connecting", "connected"]}
    assert pair.client.srtp_profile == pair.server.srtp_profile == SRTP_AEAD_AES_128_GCM
    assert_srtp_works(pair)
    assert pair.client.timer is None and pair.server.timer is None


@pytest.mark.parametrize("profile", [SRTP_AEAD_AES_128_GCM, SRTP_AES128_CM_SHA1_80])
@pytest.mark.parametrize("restricted", ["client", "server"])
async def test_handshake_with_single_profile(profile: SrtpProfile, restricted: str) -> None:
    kwargs = {f"{restricted}_profiles": (profile,)}
    pair = Pair(DtlsCertificate.generate(), DtlsCertificate.generate(), **kwargs)  # type: ignore[arg-type]
    pair.start()
    await pair.settle()
    assert pair.client.state == pair.server.state == "connected"
    assert pair.client.srtp_profile == pair.server.srtp_profile == profile
    assert_srtp_works(pair)
    # Keys of the two directions differ.
    assert pair.client.srtp_tx is not None and pair.client.srtp_rx is not None
    with pytest.raises(pylibsrtp.Error):
        pair.client.srtp_rx.unprotect(pair.client.srtp_tx.protect(RTP))


@pytest.mark.parametrize("rsa_side", ["client", "server"])
async def test_handshake_with_rsa_peer(rsa_side: str) -> None:
    rsa_cert, ec_cert = rsa_certificate(), DtlsCertificate.generate()
    pair = Pair(rsa_cert, ec_cert) if rsa_side == "client" else Pair(ec_cert, rsa_cert)
    pair.start()
    await pair.settle()
    assert pair.client.state == pair.server.state == "connected"
    assert_srtp_works(pair)


@pytest.mark.parametrize("algorithm", ["sha-1", "sha-256", "sha-384", "sha-512"])
async def test_handshake_accepts_other_hashes_and_lowercase(algorithm: str) -> None:
    server_cert = DtlsCertificate.generate()
    expects = [(algorithm.upper(), certificate_fingerprint(server_cert.cert, algorithm).lower())]
    pair = Pair(DtlsCertificate.generate(), server_cert, client_expects=expects)
    pair.start()
    await pair.settle()
    assert pair.client.state == pair.server.state == "connected"


@pytest.mark.parametrize(
    "expects",
    [
        pytest.param([("sha-256", "00:" * 31 + "00")], id="wrong-sha256"),
        pytest.param(None, id="right-sha256-wrong-sha1"),
    ],
)
async def test_fingerprint_mismatch_fails_both_sides(expects: list[tuple[str, str]] | None) -> None:
    server_cert = DtlsCertificate.generate()
    if expects is None:
        expects = sdp_fingerprint(server_cert) + [("sha-1", "11:" * 19 + "11")]
    pair = Pair(DtlsCertificate.generate(), server_cert, client_expects=expects)
    pair.start()
    await pair.settle()
    assert pair.states["client"] == ["connecting", "failed"]
    assert pair.client.error == "fingerprint mismatch"
    assert pair.client.srtp_tx is None
    # The server learns it from the alert.
    assert pair.states["server"] == ["connecting", "failed"]
    assert pair.client.timer is None and pair.server.timer is None


async def test_lost_client_hello_is_retransmitted() -> None:
    pair = Pair(DtlsCertificate.generate(), DtlsCertificate.generate(), drop=lambda side, i: side == "client" and i == 0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    pair.start()
    assert pair.client.timer is not None
    await pair.settle()
    assert pair.client.state == pair.server.state == "connected"
    assert len(pair.sent["client"]) >= 3
    # Same ClientHello, new record sequence number.
    assert pair.sent["client"][1][13:] == pair.sent["client"][0][13:]
    assert loop.time() - started >= 0.5


async def test_lost_final_server_flight_is_recovered() -> None:
    # Drop the server's second flight (ChangeCipherSpec + Finished) once: the client times out,
    # retransmits its flight, and the connected server answers it again.
    pair = Pair(DtlsCertificate.generate(), DtlsCertificate.generate(), drop=lambda side, i: side == "server" and i == 1)
    pair.start()
    await pair.settle()
    assert pair.server.state == "connected"
    assert pair.client.state == "connected"
    assert len(pair.sent["server"]) >= 3
    assert_srtp_works(pair)


async def test_close_sends_close_notify_and_peer_closes() -> None:
    pair = Pair(DtlsCertificate.generate(), DtlsCertificate.generate())
    pair.start()
    await pair.settle()
    sent_before = len(pair.sent["server"])
    pair.server.close()
    pair.server.close()
    assert len(pair.sent["server"]) == sent_before + 1
    assert pair.sent["server"][-1][0] == 21  # alert record
    await asyncio.sleep(0.02)
    assert pair.states == {"client": ["connecting", "connected", "closed"], "server": ["connecting", "connected", "closed"]}
    pair.client.feed(pair.sent["server"][-1])
    assert pair.states["client"][-1] == "closed" and len(pair.states["client"]) == 3


async def test_close_before_start_and_while_connecting() -> None:
    pair = Pair(DtlsCertificate.generate(), DtlsCertificate.generate(), drop=lambda side, i: True)
    pair.server.close()
    assert pair.states["server"] == ["closed"]
    pair.client.start()
    assert pair.client.timer is not None
    pair.client.close()
    assert pair.client.timer is None
    assert pair.states["client"] == ["connecting", "closed"]
    pair.client.start()
    pair.client.feed(b"\x16\xfe\xfd")
    assert pair.states["client"] == ["connecting", "closed"]


async def test_garbage_after_connect_is_ignored() -> None:
    pair = Pair(DtlsCertificate.generate(), DtlsCertificate.generate())
    pair.start()
    await pair.settle()
    for first in range(20, 64):
        pair.server.feed(bytes([first]) + bytes(range(60)))
        pair.server.feed(bytes([first, 0xFE, 0xFD, 0, 1]) + bytes(8) + b"\x00\x04abcd")
        pair.server.feed(bytes([first]))
    assert pair.server.state == "connected"
    assert_srtp_works(pair)


def test_invalid_role_is_rejected() -> None:
    certificate = DtlsCertificate.generate()
    with pytest.raises(ValueError, match="^DTLS role must be 'client' or 'server'$"):
        DtlsEndpoint(certificate, "both", sdp_fingerprint(certificate), lambda data: None, asyncio.new_event_loop())  # type: ignore[arg-type]
