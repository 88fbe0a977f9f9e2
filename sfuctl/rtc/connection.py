"""One ICE + DTLS + SRTP association over plain UDP datagrams (RFC 7983 demultiplexing).

The owner of the UDP socket calls `datagram_received`; everything runs synchronously in the
event loop's callbacks (no task or queue per packet).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Literal

import pylibsrtp

from .dtls import SRTP_PROFILES, DtlsCertificate, DtlsEndpoint, DtlsRole, SrtpProfile
from .ice import IceController, IceLite, IceParameters
from .send_batch import SrtpContext, srtp_context

Address = tuple[Any, ...]
IceRole = Literal["lite", "controlling"]

LITE_CONSENT_CHECK_INTERVAL = 1.0
# DTLS datagrams kept while waiting for ICE or set_remote (a ClientHello may come first).
PENDING_DTLS_MAX = 8


class Connection:
    """ICE (lite or controlling), then DTLS in the negotiated role, then SRTP both ways.

    States: "new" -> "connecting" -> "connected" -> "closed" | "failed", each change
    reported once through `on_state`. "closed" and "failed" are final.

    Liveness of a "lite" connection: a valid binding request or an authenticated SRTP/SRTCP
    packet from the selected address within `consent_timeout` (FFmpeg's WHIP muxer sends no
    binding request after connecting). A "controlling" one does RFC 7675 consent checks.
    """

    def __init__(
        self,
        role: IceRole,
        certificate: DtlsCertificate,
        send: Callable[[bytes, Address], None],
        on_rtp: Callable[[bytes], None],
        on_rtcp: Callable[[bytes], None],
        on_state: Callable[[str], None],
        consent_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        srtp_profiles: Sequence[SrtpProfile] = SRTP_PROFILES,
        send_srtp: Callable[[SrtpContext, bytes, Address], int] | None = None,
    ) -> None:
        if role not in ("lite", "controlling"):
            raise ValueError("ICE role must be 'lite' or 'controlling'")
        self.role = role
        self.certificate = certificate
        self.on_rtp = on_rtp
        self.on_rtcp = on_rtcp
        self.on_state = on_state
        self.consent_timeout = consent_timeout
        self.connect_timeout = connect_timeout
        self.srtp_profiles = tuple(srtp_profiles)
        self.local_ice = IceParameters.random()
        self.local_fingerprint = certificate.fingerprint
        self.local_candidate: tuple[str, int] | None = None
        self.state = "new"
        # Called with each decrypted DTLS application-data record (SCTP), once connected.
        self.on_data: Callable[[bytes], None] | None = None
        self.bytes_received = 0
        self.bytes_sent = 0
        self.packets_received = 0
        self.packets_sent = 0
        self.srtp_errors = 0
        self._media_received = 0
        self._media_seen = 0
        self._media_alive_at: float | None = None
        self._send = send
        self._restart_send: Callable[[bytes, Address], None] | None = None  # a controlling ICE restart's socket
        self._loop = asyncio.get_running_loop()
        self._lite = IceLite(self.local_ice) if role == "lite" else None
        self._controller: IceController | None = None
        self._remote_candidates: set[Address] = set()
        self._dtls: DtlsEndpoint | None = None
        self._pending_dtls: list[bytes] = []
        self._srtp_tx: pylibsrtp.Session | None = None
        self._srtp_rx: pylibsrtp.Session | None = None
        # A lite connection's socket may protect and send RTP in one step (SendBatch.send_rtp), with the libsrtp
        # context of the send session: no intermediate packet (a controlling one's socket changes on ICE restart).
        self._send_srtp = send_srtp if role == "lite" else None
        self._srtp_context: SrtpContext | None = None
        self._remote_addr: Address | None = None
        # asyncio.Handle, not TimerHandle: uvloop's call_at/call_later return a plain Handle (no when()) for a
        # deadline less than a millisecond away, so the ICE timer's deadline is kept beside it.
        self._connect_timer: asyncio.Handle | None = None
        self._ice_timer: asyncio.Handle | None = None
        self._ice_deadline: float | None = None
        self._consent_timer: asyncio.Handle | None = None

    @property
    def remote_addr(self) -> Address | None:
        """The selected remote address, None until ICE selected one."""
        return self._remote_addr

    @property
    def probing(self) -> Address | None:
        """An address an ICE-lite connection is checking before its media path may move there."""
        return self._lite.probing if self._lite is not None else None

    @property
    def srtp_profile(self) -> str | None:
        """The negotiated SRTP profile name, None before DTLS completes."""
        if self._dtls is None or self._dtls.srtp_profile is None:
            return None
        return self._dtls.srtp_profile.name

    @property
    def dtls_role(self) -> DtlsRole | None:
        """"client" or "server" once the remote description is set (RFC 8832 stream-id parity follows it)."""
        return self._dtls.role if self._dtls is not None else None

    @property
    def timers(self) -> list[asyncio.Handle]:
        """The loop timers this connection currently holds (empty once closed or failed)."""
        handles = [self._connect_timer, self._ice_timer, self._consent_timer]
        if self._dtls is not None:
            handles.append(self._dtls.timer)
        return [h for h in handles if h is not None and not h.cancelled()]

    def set_remote(
        self,
        ice: IceParameters,
        fingerprints: list[tuple[str, str]],
        dtls_role: DtlsRole,
        candidates: Sequence[tuple[str, int]] = (),
    ) -> None:
        """Start connecting to the remote described by its SDP (credentials, fingerprints, candidates)."""
        if self.state != "new":
            raise ValueError("remote description already set")
        self._dtls = DtlsEndpoint(
            self.certificate,
            dtls_role,
            fingerprints,
            self._send_to_remote,
            self._loop,
            on_state=self._on_dtls_state,
            srtp_profiles=self.srtp_profiles,
            on_data=self._on_dtls_data,
        )
        self._set_state("connecting")
        self._connect_timer = self._loop.call_later(self.connect_timeout, self._on_connect_timeout)
        if self._lite is not None:
            self._lite.remote = ice
            self._consent_timer = self._loop.call_later(LITE_CONSENT_CHECK_INTERVAL, self._on_lite_consent_timer)
            self._maybe_start_dtls()
            return
        self._remote_candidates = {(host, port) for host, port in candidates}
        self._controller = IceController(
            self.local_ice,
            ice,
            list(candidates),
            connect_timeout=self.connect_timeout,
            consent_timeout=self.consent_timeout,
        )
        self._send_all(self._controller.start(self._loop.time()))
        self._rearm_ice_timer()

    def use_sender(self, send: Callable[[bytes, Address], None]) -> Callable[[bytes, Address], None]:
        """Send every later datagram through `send` (a TCP stream, another socket), RTP too (not through the UDP send
        batch); returns the sender it replaces."""
        previous, self._send = self._send, send
        self._send_srtp = self._srtp_context = None
        return previous

    @property
    def ice_restarting(self) -> bool:
        """True from a controlling ICE restart until its first check succeeds (media keeps the old path)."""
        return self._restart_send is not None

    def restart_ice(
        self,
        remote: IceParameters | None = None,
        candidates: Sequence[tuple[str, int]] = (),
        *,
        local: IceParameters | None = None,
        send: Callable[[bytes, Address], None] | None = None,
    ) -> IceParameters:
        """ICE restart (RFC 8445 section 9): new credentials on both sides, DTLS and SRTP carry on. Returns the
        new local credentials.

        Lite: fresh local credentials for the answer; checks signed with the old ones go unanswered and the media
        path moves to the first address that checks with the new ones. Controlling: checks `candidates` of
        `remote` with `local` (fresh when None) through `send` (a new socket) when given; media keeps the old
        path until a check succeeds, then moves to `send`.
        """
        if self.state != "connected":
            raise ValueError(f"an ICE restart needs a connected connection (this one is {self.state})")
        self.local_ice = local or IceParameters.random()
        if self._lite is not None:
            previous = self._lite
            self._lite = IceLite(self.local_ice)
            self._lite.last_request_at = previous.last_request_at  # consent runs on across the restart
            return self.local_ice
        if remote is None:
            raise ValueError("a controlling ICE restart needs the remote's new credentials")
        self._remote_candidates = {(host, port) for host, port in candidates}
        self._controller = IceController(
            self.local_ice,
            remote,
            list(candidates),
            connect_timeout=self.connect_timeout,
            consent_timeout=self.consent_timeout,
        )
        self._restart_send = send or self._send
        self._send_all(self._controller.start(self._loop.time()))
        self._rearm_ice_timer()
        return self.local_ice

    def datagram_received(self, data: bytes, addr: Address) -> None:
        """Demultiplex one datagram (RFC 7983) and process it."""
        if not data:
            return
        self.bytes_received += len(data)
        self.packets_received += 1
        first = data[0]
        if 127 < first < 192:
            if addr != self._remote_addr or self._srtp_rx is None:
                return
            try:
                if len(data) > 1 and 191 < data[1] < 224:
                    plain = self._srtp_rx.unprotect_rtcp(data)
                    rtcp = True
                else:
                    plain = self._srtp_rx.unprotect(data)
                    rtcp = False
            except (pylibsrtp.Error, ValueError):  # ValueError: longer than pylibsrtp's 1500-byte buffer
                self.srtp_errors += 1
                return
            self._media_received += 1
            if rtcp:
                self.on_rtcp(plain)
            else:
                self.on_rtp(plain)
        elif first < 4:
            self._stun_received(data, addr)
        elif 19 < first < 64:
            self._dtls_received(data, addr)

    def send_rtp(self, packet: bytes) -> None:
        """Protect and send one RTP packet; dropped when not connected.

        Hot path (once per consumer per packet): _send_to_remote is inlined here.
        """
        srtp = self._srtp_tx
        addr = self._remote_addr
        if srtp is None or addr is None:
            return
        context = self._srtp_context
        if context is not None:
            size = self._send_srtp(context, packet, addr)  # type: ignore[misc]
            if size < 0:
                self.srtp_errors += 1
                return
        else:
            try:
                data = srtp.protect(packet)
            except pylibsrtp.Error:
                self.srtp_errors += 1
                return
            size = len(data)
            self._send(data, addr)
        self.bytes_sent += size
        self.packets_sent += 1

    def send_rtcp(self, packet: bytes) -> None:
        """Protect and send one RTCP compound packet; dropped when not connected."""
        if self._srtp_tx is None:
            return
        try:
            data = self._srtp_tx.protect_rtcp(packet)
        except pylibsrtp.Error:
            self.srtp_errors += 1
            return
        self._send_to_remote(data)

    def send_data(self, data: bytes) -> None:
        """Send one DTLS application-data record (an SCTP packet); dropped when not connected."""
        if self._dtls is not None and self.state == "connected":
            self._dtls.send_data(data)

    def close(self) -> None:
        """Send DTLS close_notify, cancel every timer and go "closed"; idempotent."""
        self._stop("closed")
        if self._dtls is not None:
            self._dtls.close()

    def start_srtp(self, tx: pylibsrtp.Session, rx: pylibsrtp.Session | None) -> None:
        """Protect with `tx` and unprotect with `rx` from now on (the DTLS handshake's keys)."""
        self._srtp_tx, self._srtp_rx = tx, rx
        self._srtp_context = srtp_context(tx) if self._send_srtp is not None else None

    def _send_to_remote(self, data: bytes) -> None:
        addr = self._remote_addr
        if addr is None:
            return
        self.bytes_sent += len(data)
        self.packets_sent += 1
        self._send(data, addr)

    def _send_all(self, datagrams: list[tuple[bytes, Address]]) -> None:
        """ICE datagrams: through the restart's socket while a controlling restart is under way."""
        send = self._restart_send or self._send
        for data, addr in datagrams:
            self.bytes_sent += len(data)
            self.packets_sent += 1
            send(data, addr)

    def _stun_received(self, data: bytes, addr: Address) -> None:
        if self.state in ("closed", "failed"):
            return
        now = self._loop.time()
        if self._lite is not None:
            self._send_all([(datagram, addr) for datagram in self._lite.handle(data, addr, now)])
            if self._lite.selected != self._remote_addr:
                self._remote_addr = self._lite.selected
                self._maybe_start_dtls()
            return
        if self._controller is None:
            return
        response = self._controller.handle(data, addr, now)
        if response is not None:
            self._send_all([(response, addr)])
        if self._controller.selected is not None and self._remote_addr is None:
            self._remote_addr = self._controller.selected
            self._maybe_start_dtls()
        elif self._controller.selected is not None and self._restart_send is not None:
            # The restarted ICE has a path: media and DTLS move to it.
            self._send, self._restart_send = self._restart_send, None
            self._remote_addr = self._controller.selected
        self._rearm_ice_timer()

    def _dtls_received(self, data: bytes, addr: Address) -> None:
        dtls = self._dtls
        if dtls is not None and dtls.state != "new":
            if addr == self._remote_addr:
                dtls.feed(data)
        elif len(self._pending_dtls) < PENDING_DTLS_MAX and self._may_buffer_dtls(addr):
            self._pending_dtls.append(data)

    def _may_buffer_dtls(self, addr: Address) -> bool:
        if self.state in ("closed", "failed"):
            return False
        if self._lite is not None:
            return self._lite.selected == addr
        return addr in self._remote_candidates

    def _maybe_start_dtls(self) -> None:
        dtls = self._dtls
        if dtls is None or dtls.state != "new" or self._remote_addr is None:
            return
        dtls.start()
        pending, self._pending_dtls = self._pending_dtls, []
        for data in pending:
            dtls.feed(data)

    def _on_dtls_state(self, state: str) -> None:
        if state == "connected":
            assert self._dtls is not None
            self.start_srtp(self._dtls.srtp_tx, self._dtls.srtp_rx)  # type: ignore[arg-type]
            if self._connect_timer is not None:
                self._connect_timer.cancel()
                self._connect_timer = None
            self._set_state("connected")
        elif state in ("closed", "failed"):
            self._stop(state)

    def _on_dtls_data(self, data: bytes) -> None:
        if self.on_data is not None:
            self.on_data(data)

    def _on_connect_timeout(self) -> None:
        self._connect_timer = None
        self._fail()

    def _on_lite_consent_timer(self) -> None:
        assert self._lite is not None
        now = self._loop.time()
        if self._media_received != self._media_seen:
            self._media_seen = self._media_received
            self._media_alive_at = now
        last = self._lite.last_request_at
        if last is not None and self._media_alive_at is not None:
            last = max(last, self._media_alive_at)
        if last is not None and now - last >= self.consent_timeout:
            self._consent_timer = None
            self._fail()
            return
        self._consent_timer = self._loop.call_later(LITE_CONSENT_CHECK_INTERVAL, self._on_lite_consent_timer)

    def _on_ice_timer(self) -> None:
        self._ice_timer = None
        assert self._controller is not None
        self._send_all(self._controller.poll(self._loop.time()))
        self._rearm_ice_timer()

    def _rearm_ice_timer(self) -> None:
        controller = self._controller
        if controller is None or self.state in ("closed", "failed"):
            return
        if controller.state == "failed":
            self._fail()
            return
        deadline = controller.next_deadline
        if self._ice_timer is not None:
            if deadline is not None and self._ice_deadline == deadline:
                return
            self._ice_timer.cancel()
            self._ice_timer = None
        if deadline is not None:
            self._ice_timer = self._loop.call_at(deadline, self._on_ice_timer)
            self._ice_deadline = deadline

    def _fail(self) -> None:
        self._stop("failed")
        if self._dtls is not None:
            self._dtls.close()

    def _stop(self, state: str) -> None:
        for timer in (self._connect_timer, self._ice_timer, self._consent_timer):
            if timer is not None:
                timer.cancel()
        self._connect_timer = self._ice_timer = self._consent_timer = None
        self._srtp_tx = self._srtp_rx = self._srtp_context = None
        self._pending_dtls.clear()
        if self.state not in ("closed", "failed"):
            self._set_state(state)

    def _set_state(self, state: str) -> None:
        self.state = state
        self.on_state(state)


class _ClientProtocol(asyncio.DatagramProtocol):
    """Feeds the client socket's datagrams to its connection."""

    def __init__(self) -> None:
        self.connection: Connection | None = None

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if self.connection is not None:
            self.connection.datagram_received(data, addr)


async def open_client_connection(
    local_host: str = "127.0.0.1", **kwargs: Any
) -> tuple[Connection, asyncio.DatagramTransport]:
    """A controlling Connection on its own UDP socket bound to `local_host`:0.

    `kwargs` are Connection's (certificate defaults to the process-wide one). The caller then
    calls `set_remote` with the server's candidates, and closes the transport after `close()`.
    """
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(_ClientProtocol, local_addr=(local_host, 0))
    kwargs.setdefault("certificate", DtlsCertificate.default())
    connection = Connection(role="controlling", send=transport.sendto, **kwargs)
    host, port = transport.get_extra_info("sockname")[:2]
    connection.local_candidate = (host, port)
    protocol.connection = connection
    return connection, transport
