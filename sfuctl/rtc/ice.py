"""ICE over plain UDP: the server's ICE-lite agent and a minimal controlling agent for clients.

Both are sans-IO: they take datagrams and the current time and return the datagrams to send.
STUN wire format comes from `aioice.stun`.
"""

from __future__ import annotations

import random
import secrets
import string
import struct
from dataclasses import dataclass
from typing import Any

from aioice import stun

ICE_CHARS = string.ascii_letters + string.digits + "+/"
_ICE_CHARS_SET = frozenset(ICE_CHARS)

BINDING_REQUEST = 0x0001
STUN_COOKIE = 0x2112A442
USERNAME_ATTRIBUTE = 0x0006
# Priority of a peer-reflexive candidate for component 1 (RFC 8445 section 5.1.2.1).
PRFLX_PRIORITY = (110 << 24) | (65535 << 8) | 255

CHECK_INTERVAL_FIRST = 0.05
CHECK_INTERVAL_MAX = 0.5
CONSENT_INTERVAL = 5.0
# An ICE-lite agent checks a new remote address (IceLite) at most this often.
PROBE_INTERVAL = 0.5
# A selected path whose peer has sent no check for this long may be left for an address whose checks do not
# nominate (no USE-CANDIDATE): two consent intervals at their longest (5 s + 20%, RFC 7675), so only a dead path
# (e.g. a NAT binding that changed under a client that nominates once) is left that way, not one that lost a check.
SELECTED_SILENCE = 12.0

Address = tuple[Any, ...]


@dataclass(frozen=True)
class IceParameters:
    """ICE credentials of one side (a=ice-ufrag / a=ice-pwd)."""

    ufrag: str
    pwd: str

    def __post_init__(self) -> None:
        if not 4 <= len(self.ufrag) <= 256 or not _ICE_CHARS_SET.issuperset(self.ufrag):
            raise ValueError("ICE ufrag must be 4 to 256 ice-chars")
        if not 22 <= len(self.pwd) <= 256 or not _ICE_CHARS_SET.issuperset(self.pwd):
            raise ValueError("ICE pwd must be 22 to 256 ice-chars")

    @classmethod
    def random(cls) -> IceParameters:
        """Fresh random credentials: an 8-char ufrag and a 24-char pwd."""
        return cls(
            ufrag="".join(secrets.choice(ICE_CHARS) for _ in range(8)),
            pwd="".join(secrets.choice(ICE_CHARS) for _ in range(24)),
        )


def stun_username(data: bytes) -> str | None:
    """USERNAME of a STUN binding request, or None if `data` is not a well-formed one."""
    size = len(data)
    if size < 20:
        return None
    msg_type, length, cookie = struct.unpack_from("!HHI", data)
    if msg_type != BINDING_REQUEST or cookie != STUN_COOKIE or length + 20 != size:
        return None
    pos = 20
    while pos + 4 <= size:
        attr_type, attr_len = struct.unpack_from("!HH", data, pos)
        end = pos + 4 + attr_len
        if end > size:
            return None
        if attr_type == USERNAME_ATTRIBUTE:
            try:
                return data[pos + 4 : end].decode("utf-8")
            except UnicodeDecodeError:
                return None
        pos = end + (-attr_len % 4)
    return None


def _parse(data: bytes) -> stun.Message | None:
    """Parse a STUN message (FINGERPRINT checked if present); None if malformed."""
    try:
        return stun.parse_message(data)
    except (ValueError, struct.error):
        return None


def authenticated_request(data: bytes, local: IceParameters) -> stun.Message | None:
    """The binding request in `data` if it is addressed to `local` and signed with its pwd."""
    message = _parse(data)
    return message if message is not None and _is_authenticated_request(message, local) else None


def _is_authenticated_request(message: stun.Message, local: IceParameters) -> bool:
    if message.message_method != stun.Method.BINDING or message.message_class != stun.Class.REQUEST:
        return False
    username = message.attributes.get("USERNAME")
    if not isinstance(username, str) or username.split(":", 1)[0] != local.ufrag:
        return False
    return message.check_message_integrity(local.pwd.encode())


def _response(request: stun.Message, addr: Address, pwd: str) -> bytes:
    """Signed binding success response carrying the request's source address."""
    response = stun.Message(
        message_method=stun.Method.BINDING,
        message_class=stun.Class.RESPONSE,
        transaction_id=request.transaction_id,
    )
    response.attributes["XOR-MAPPED-ADDRESS"] = (addr[0], addr[1])
    response.add_message_integrity(pwd.encode())
    return bytes(response)


def _role_conflict(request: stun.Message, pwd: str) -> bytes:
    """Signed 487 Role Conflict error response."""
    response = stun.Message(
        message_method=stun.Method.BINDING,
        message_class=stun.Class.ERROR,
        transaction_id=request.transaction_id,
    )
    response.attributes["ERROR-CODE"] = (487, "Role Conflict")
    response.add_message_integrity(pwd.encode())
    return bytes(response)


class IceLite:
    """Server-side ICE-lite agent (RFC 8445 section 2.5): answers checks, and checks a new path before using it.

    The first address that sends a valid check becomes the selected one. Another address may take its place when
    its check nominates it (USE-CANDIDATE: the controlling agent chose that pair, RFC 8445 section 8.1.1), or when
    the selected address has sent no check for SELECTED_SILENCE; a browser keeps checking the pairs it did not
    choose, and following those would take the path away from the one its media comes on. Even then a check does
    not move the path by itself: whoever holds the credentials can forge one with any source address, and would
    make the server send media to a third party. The agent sends its own binding request there (the client's
    credentials, a fresh transaction id) and moves only when the matching signed response comes back from that
    address (return routability, as full ICE agents get from their own checks).
    """

    def __init__(self, local: IceParameters) -> None:
        self.local = local
        self.remote: IceParameters | None = None
        self.selected: Address | None = None
        self.last_request_at: float | None = None
        self.tie_breaker = secrets.randbits(64)
        self._probe: tuple[bytes, Address, float] | None = None  # (transaction id, address, sent at)
        self._selected_checked_at = 0.0  # the last valid check from the selected address

    @property
    def probing(self) -> Address | None:
        """The address being checked before the path may move there, if any."""
        return self._probe[1] if self._probe is not None else None

    def handle(self, data: bytes, addr: Address, now: float) -> list[bytes]:
        """Take one STUN datagram from `addr`; returns what to send back to `addr` (nothing if it is not for us)."""
        message = _parse(data)
        if message is None:
            return []
        if message.message_class == stun.Class.RESPONSE:
            self._probe_answered(message, addr, now)
            return []
        if not _is_authenticated_request(message, self.local):
            return []
        if "ICE-CONTROLLED" in message.attributes:
            # A lite agent is always controlled, so the peer must switch roles.
            return [_role_conflict(message, self.local.pwd)]
        self.last_request_at = now
        out = [_response(message, addr, self.local.pwd)]
        if self.selected is None:
            self.selected = addr
        if addr == self.selected:
            self._selected_checked_at = now
        elif "USE-CANDIDATE" in message.attributes or now - self._selected_checked_at >= SELECTED_SILENCE:
            probe = self._probe_request(addr, now)
            if probe is not None:
                out.append(probe)
        return out

    def _probe_request(self, addr: Address, now: float) -> bytes | None:
        """A binding request to `addr`, at most one per PROBE_INTERVAL (so a check never costs more than two
        datagrams back); None without the client's credentials."""
        if self.remote is None:
            return None
        if self._probe is not None and self._probe[1] == addr and now - self._probe[2] < PROBE_INTERVAL:
            return None
        request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        request.attributes["USERNAME"] = f"{self.remote.ufrag}:{self.local.ufrag}"
        request.attributes["PRIORITY"] = PRFLX_PRIORITY
        request.attributes["ICE-CONTROLLED"] = self.tie_breaker
        request.add_message_integrity(self.remote.pwd.encode())
        self._probe = (request.transaction_id, addr, now)
        return bytes(request)

    def _probe_answered(self, message: stun.Message, addr: Address, now: float) -> None:
        probe = self._probe
        if (
            probe is None
            or message.message_method != stun.Method.BINDING
            or message.transaction_id != probe[0]
            or addr != probe[1]
            or self.remote is None
            or not message.check_message_integrity(self.remote.pwd.encode())
        ):
            return
        self._probe = None
        self.selected = addr
        self._selected_checked_at = now


class _Check:
    """One connectivity check transaction towards a remote candidate."""

    __slots__ = ("addr", "request", "next_at", "interval")

    def __init__(self, addr: Address, request: bytes, now: float) -> None:
        self.addr = addr
        self.request = request
        self.next_at = now
        self.interval = CHECK_INTERVAL_FIRST


class IceController:
    """Minimal controlling agent with aggressive nomination and consent freshness (RFC 7675).

    States: "new" -> "checking" -> "connected" -> "failed" (no answer in `connect_timeout`
    or consent lost for `consent_timeout`).
    """

    def __init__(
        self,
        local: IceParameters,
        remote: IceParameters,
        remote_candidates: list[tuple[str, int]],
        *,
        connect_timeout: float = 10.0,
        consent_timeout: float = 30.0,
        consent_interval: float = CONSENT_INTERVAL,
    ) -> None:
        self.local = local
        self.remote = remote
        self.remote_candidates = [(host, port) for host, port in remote_candidates]
        self.connect_timeout = connect_timeout
        self.consent_timeout = consent_timeout
        self.consent_interval = consent_interval
        self.tie_breaker = secrets.randbits(64)
        self.state = "new"
        self.selected: Address | None = None
        self.consent_at = 0.0
        self._started_at = 0.0
        self._checks: dict[bytes, _Check] = {}
        self._consent_pending: dict[bytes, float] = {}
        self._next_consent_at = 0.0

    def _request(self) -> stun.Message:
        request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        request.attributes["USERNAME"] = f"{self.remote.ufrag}:{self.local.ufrag}"
        request.attributes["PRIORITY"] = PRFLX_PRIORITY
        request.attributes["ICE-CONTROLLING"] = self.tie_breaker
        request.attributes["USE-CANDIDATE"] = None
        request.add_message_integrity(self.remote.pwd.encode())
        return request

    @property
    def next_deadline(self) -> float | None:
        """Time at which `poll` must next be called, None when nothing is pending."""
        if self.state == "checking":
            return min([c.next_at for c in self._checks.values()] + [self._started_at + self.connect_timeout])
        if self.state == "connected":
            return min(self._next_consent_at, self.consent_at + self.consent_timeout)
        return None

    def start(self, now: float) -> list[tuple[bytes, Address]]:
        """Begin checking every remote candidate; returns the first requests to send."""
        if self.state != "new":
            raise ValueError("ICE controller already started")
        self.state = "checking"
        self._started_at = now
        for addr in self.remote_candidates:
            request = self._request()
            self._checks[request.transaction_id] = _Check(addr, bytes(request), now)
        return self.poll(now)

    def poll(self, now: float) -> list[tuple[bytes, Address]]:
        """Run due retransmissions, consent requests and timeouts; returns datagrams to send."""
        out: list[tuple[bytes, Address]] = []
        if self.state == "checking":
            if now >= self._started_at + self.connect_timeout:
                self._fail()
                return out
            for check in self._checks.values():
                if check.next_at <= now:
                    out.append((check.request, check.addr))
                    check.next_at = now + check.interval
                    check.interval = min(check.interval * 2, CHECK_INTERVAL_MAX)
        elif self.state == "connected":
            if now >= self.consent_at + self.consent_timeout:
                self._fail()
                return out
            if now >= self._next_consent_at:
                request = self._request()
                horizon = now - self.consent_timeout
                self._consent_pending = {t: s for t, s in self._consent_pending.items() if s > horizon}
                self._consent_pending[request.transaction_id] = now
                self._schedule_consent(now)
                assert self.selected is not None
                out.append((bytes(request), self.selected))
        return out

    def handle(self, data: bytes, addr: Address, now: float) -> bytes | None:
        """Process an incoming STUN datagram; returns a response to send back to `addr`, if any."""
        if self.state in ("new", "failed"):
            return None
        request = authenticated_request(data, self.local)
        if request is not None:
            return _response(request, addr, self.local.pwd)
        message = _parse(data)
        if message is None or message.message_class != stun.Class.RESPONSE:
            return None
        tid = message.transaction_id
        if self.state == "checking":
            check = self._checks.get(tid)
            if check is None or check.addr != addr or not self._signed(message):
                return None
            self.state = "connected"
            self.selected = addr
            self._checks.clear()
            self.consent_at = now
            self._schedule_consent(now)
        elif tid in self._consent_pending and addr == self.selected and self._signed(message):
            del self._consent_pending[tid]
            self.consent_at = now
        return None

    def _signed(self, message: stun.Message) -> bool:
        return message.check_message_integrity(self.remote.pwd.encode())

    def _schedule_consent(self, now: float) -> None:
        self._next_consent_at = now + self.consent_interval * random.uniform(0.8, 1.2)

    def _fail(self) -> None:
        self.state = "failed"
        self._checks.clear()
        self._consent_pending.clear()
