"""DTLS-SRTP (RFC 5764) over OpenSSL memory BIOs: certificates, handshake with timers, SRTP keys."""

from __future__ import annotations

import asyncio
import datetime
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Literal

import pylibsrtp
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from OpenSSL import SSL, crypto

# ECDSA suites for our certificate, RSA suites for a peer with an RSA certificate acting as server.
CIPHERS = b":".join(
    [
        b"ECDHE-ECDSA-AES128-GCM-SHA256",
        b"ECDHE-RSA-AES128-GCM-SHA256",
        b"ECDHE-ECDSA-AES256-GCM-SHA384",
        b"ECDHE-RSA-AES256-GCM-SHA384",
        b"ECDHE-ECDSA-CHACHA20-POLY1305",
        b"ECDHE-RSA-CHACHA20-POLY1305",
        b"ECDHE-ECDSA-AES128-SHA",
        b"ECDHE-RSA-AES128-SHA",
        b"ECDHE-ECDSA-AES256-SHA",
        b"ECDHE-RSA-AES256-SHA",
    ]
)
DTLS_MTU = 1200
RECORD_HEADER_LENGTH = 13

HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha-1": hashes.SHA1,
    "sha-256": hashes.SHA256,
    "sha-384": hashes.SHA384,
    "sha-512": hashes.SHA512,
}

DtlsRole = Literal["client", "server"]


@dataclass(frozen=True)
class SrtpProfile:
    """A DTLS-SRTP protection profile: its OpenSSL name, libsrtp id and key sizes."""

    name: str
    libsrtp_profile: int
    key_length: int
    salt_length: int


SRTP_AEAD_AES_128_GCM = SrtpProfile("SRTP_AEAD_AES_128_GCM", pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 16, 12)
SRTP_AES128_CM_SHA1_80 = SrtpProfile("SRTP_AES128_CM_SHA1_80", pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 16, 14)
# Offered in this order.
SRTP_PROFILES: tuple[SrtpProfile, ...] = (SRTP_AEAD_AES_128_GCM, SRTP_AES128_CM_SHA1_80)


def certificate_fingerprint(cert: x509.Certificate, algorithm: str) -> str:
    """Upper-case colon-separated digest of `cert` ("AB:CD:..."), `algorithm` as in SDP ("sha-256")."""
    return cert.fingerprint(HASHES[algorithm]()).hex(":").upper()


def _verify_peer(conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int) -> bool:
    """OpenSSL verify callback: accept any chain whose leaf matches the SDP fingerprints."""
    if depth != 0:
        return True
    endpoint: DtlsEndpoint = conn.get_app_data()
    return endpoint.fingerprint_matches(cert.to_cryptography())


class DtlsCertificate:
    """A private key and its self-signed certificate."""

    def __init__(self, key: CertificateIssuerPrivateKeyTypes, cert: x509.Certificate) -> None:
        self.key = key
        self.cert = cert
        self._contexts: dict[tuple[SrtpProfile, ...], SSL.Context] = {}

    @classmethod
    def generate(cls) -> DtlsCertificate:
        """A new ECDSA P-256 key with a self-signed SHA-256 certificate valid for 30 days."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, secrets.token_hex(16))])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    @staticmethod
    @cache
    def default() -> DtlsCertificate:
        """The process-wide certificate, generated on first use."""
        return DtlsCertificate.generate()

    @property
    def fingerprint(self) -> str:
        """SDP a=fingerprint value: "sha-256 AB:CD:..."."""
        return "sha-256 " + certificate_fingerprint(self.cert, "sha-256")

    def context(self, profiles: Sequence[SrtpProfile] = SRTP_PROFILES) -> SSL.Context:
        """The (cached) DTLS context offering `profiles` in order."""
        key = tuple(profiles)
        ctx = self._contexts.get(key)
        if ctx is None:
            ctx = SSL.Context(SSL.DTLS_METHOD)
            ctx.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_QUERY_MTU)
            ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _verify_peer)
            ctx.use_certificate(self.cert)
            ctx.use_privatekey(self.key)
            ctx.set_cipher_list(CIPHERS)
            ctx.set_tlsext_use_srtp(b":".join(p.name.encode() for p in key))
            self._contexts[key] = ctx
        return ctx


def normalize_fingerprints(fingerprints: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Lower-case algorithms and upper-case values, keeping only supported hashes."""
    supported = [(a.lower(), v.upper()) for a, v in fingerprints if a.lower() in HASHES]
    if not supported:
        raise ValueError("no supported DTLS fingerprint (sha-1, sha-256, sha-384 or sha-512)")
    return supported


def split_records(data: bytes, mtu: int = DTLS_MTU) -> list[bytes]:
    """Pack the DTLS records of one BIO read into datagrams of at most `mtu` bytes (records stay whole)."""
    out: list[bytes] = []
    start = pos = 0
    size = len(data)
    while pos + RECORD_HEADER_LENGTH <= size:
        end = pos + RECORD_HEADER_LENGTH + int.from_bytes(data[pos + 11 : pos + 13], "big")
        if end - start > mtu and pos > start:
            out.append(data[start:pos])
            start = pos
        pos = end
    if start < size:
        out.append(data[start:])
    return out


class DtlsEndpoint:
    """One side of a DTLS-SRTP handshake driven by datagrams.

    States: "new" -> "connecting" -> "connected" -> "closed" | "failed"; `on_state` is called
    once per change. `srtp_tx` / `srtp_rx` are set when "connected".
    """

    def __init__(
        self,
        certificate: DtlsCertificate,
        role: DtlsRole,
        remote_fingerprints: Sequence[tuple[str, str]],
        send: Callable[[bytes], None],
        loop: asyncio.AbstractEventLoop,
        on_state: Callable[[str], None] | None = None,
        srtp_profiles: Sequence[SrtpProfile] = SRTP_PROFILES,
        on_data: Callable[[bytes], None] | None = None,
    ) -> None:
        if role not in ("client", "server"):
            raise ValueError("DTLS role must be 'client' or 'server'")
        self.role = role
        self.remote_fingerprints = normalize_fingerprints(remote_fingerprints)
        self.state = "new"
        self.error: str | None = None
        self.srtp_profile: SrtpProfile | None = None
        self.srtp_tx: pylibsrtp.Session | None = None
        self.srtp_rx: pylibsrtp.Session | None = None
        self._send = send
        self._loop = loop
        self._on_state = on_state
        self.on_data = on_data
        self._profiles = tuple(srtp_profiles)
        self._timer: asyncio.TimerHandle | None = None
        self._ssl = SSL.Connection(certificate.context(self._profiles), None)
        self._ssl.set_app_data(self)
        self._ssl.set_ciphertext_mtu(DTLS_MTU)

    @property
    def timer(self) -> asyncio.TimerHandle | None:
        """The pending retransmission timer, if any."""
        return self._timer

    def fingerprint_matches(self, cert: x509.Certificate) -> bool:
        """Whether `cert` matches every supported remote fingerprint."""
        if all(certificate_fingerprint(cert, a) == v for a, v in self.remote_fingerprints):
            return True
        self.error = "fingerprint mismatch"
        return False

    def start(self) -> None:
        """Begin the handshake: a client sends its ClientHello, a server waits for one."""
        if self.state != "new":
            return
        self._set_state("connecting")
        if self.role == "client":
            self._ssl.set_connect_state()
            self._handshake()
        else:
            self._ssl.set_accept_state()

    def feed(self, data: bytes) -> None:
        """Process one DTLS datagram from the peer."""
        if self.state not in ("connecting", "connected"):
            return
        self._ssl.bio_write(data)
        if self.state == "connecting":
            self._handshake()
            if self.state != "connected":
                return
        try:
            while True:
                # Application data is SCTP (data channels); dropped when nobody takes it.
                record = self._ssl.recv(65536)
                if self.on_data is not None and self.state == "connected":
                    self.on_data(record)
        except SSL.WantReadError:
            # May be a retransmitted peer flight our last flight answers again.
            self._flush()
        except SSL.ZeroReturnError:
            self._finish("closed")
        except SSL.Error as exc:
            self.error = str(exc)
            self._flush()
            self._finish("failed")

    def send_data(self, data: bytes) -> None:
        """Encrypt and send one application-data record (an SCTP packet); dropped unless connected."""
        if self.state != "connected":
            return
        try:
            self._ssl.send(data)
        except SSL.Error as exc:
            self.error = str(exc)
            self._finish("failed")
            return
        self._flush()

    def close(self) -> None:
        """Send close_notify (if the handshake started) and stop; idempotent."""
        if self.state in ("connecting", "connected"):
            try:
                self._ssl.shutdown()
            except SSL.Error:
                pass
            self._flush()
        self._finish("closed")

    def _handshake(self) -> None:
        try:
            self._ssl.do_handshake()
        except SSL.WantReadError:
            self._flush()
            self._arm_timer()
            return
        except SSL.Error as exc:
            if self.error is None:
                self.error = str(exc)
            self._flush()
            self._finish("failed")
            return
        self._flush()
        self._setup_srtp()
        self._arm_timer()

    def _setup_srtp(self) -> None:
        name = self._ssl.get_selected_srtp_profile().decode()
        profile = next((p for p in self._profiles if p.name == name), None)
        if profile is None:
            self.error = "no SRTP profile negotiated"
            self._finish("failed")
            return
        k, s = profile.key_length, profile.salt_length
        material = self._ssl.export_keying_material(b"EXTRACTOR-dtls_srtp", 2 * (k + s))
        client = material[0:k] + material[2 * k : 2 * k + s]
        server = material[k : 2 * k] + material[2 * k + s :]
        tx, rx = (client, server) if self.role == "client" else (server, client)
        self.srtp_profile = profile
        self.srtp_tx = pylibsrtp.Session(self._policy(tx, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, profile))
        self.srtp_rx = pylibsrtp.Session(self._policy(rx, pylibsrtp.Policy.SSRC_ANY_INBOUND, profile))
        self._set_state("connected")

    @staticmethod
    def _policy(key: bytes, ssrc_type: int, profile: SrtpProfile) -> pylibsrtp.Policy:
        policy = pylibsrtp.Policy(key=key, ssrc_type=ssrc_type, srtp_profile=profile.libsrtp_profile)
        # An SFU forwards retransmissions of packets it already protected once.
        policy.allow_repeat_tx = True
        policy.window_size = 1024
        return policy

    def _flush(self) -> None:
        chunks = []
        try:
            while True:
                chunks.append(self._ssl.bio_read(65536))
        except SSL.WantReadError:
            pass
        if chunks:
            for datagram in split_records(b"".join(chunks)):
                self._send(datagram)

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        delay = self._ssl.DTLSv1_get_timeout()
        if delay is not None and self.state in ("connecting", "connected"):
            self._timer = self._loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        try:
            self._ssl.DTLSv1_handle_timeout()
        except SSL.Error as exc:
            self.error = str(exc)
            self._finish("failed")
            return
        self._flush()
        self._arm_timer()

    def _finish(self, state: str) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._ssl.set_app_data(None)
        if self.state not in ("closed", "failed"):
            self._set_state(state)

    def _set_state(self, state: str) -> None:
        self.state = state
        if self._on_state is not None:
            self._on_state(state)
