"""ICE-lite server agent, controlling client agent and STUN username extraction (sans-IO)."""

import random
import struct

import pytest
from aioice import stun

from sfuctl.rtc.ice import ICE_CHARS, PRFLX_PRIORITY, SELECTED_SILENCE, IceController, IceLite, IceParameters, stun_username

SERVER = IceParameters("srvufrag", "serverpasswordserverpass")
CLIENT = IceParameters("cliufrag", "clientpasswordclientpass")
CLIENT_ADDR = ("127.0.0.1", 40000)
SERVER_ADDR = ("127.0.0.1", 50000)


def binding_request(
    username: str = "srvufrag:cliufrag",
    pwd: str = SERVER.pwd,
    *,
    use_candidate: bool = False,
    controlled: bool = False,
) -> bytes:
    """A binding request as a browser or aioice builds it."""
    message = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    message.attributes["USERNAME"] = username
    message.attributes["PRIORITY"] = 1853824767
    if controlled:
        message.attributes["ICE-CONTROLLED"] = 1
    else:
        message.attributes["ICE-CONTROLLING"] = 0x1234567890ABCDEF
    if use_candidate:
        message.attributes["USE-CANDIDATE"] = None
    message.add_message_integrity(pwd.encode())
    return bytes(message)


def corrupt_fingerprint(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0xFF])


# --- IceParameters -------------------------------------------------------------------------


def test_random_parameters_are_long_ice_chars_and_unique() -> None:
    params = [IceParameters.random() for _ in range(50)]
    for p in params:
        assert len(p.ufrag) >= 8 and len(p.pwd) >= 24
        assert set(p.ufrag + p.pwd) <= set(ICE_CHARS)
    assert len({p.ufrag for p in params}) == 50


@pytest.mark.parametrize(
    ("ufrag", "pwd", "message"),
    [
        ("abc", "p" * 22, "ICE ufrag must be 4 to 256 ice-chars"),
        ("ab:c", "p" * 22, "ICE ufrag must be 4 to 256 ice-chars"),
        ("abcd", "p" * 21, "ICE pwd must be 22 to 256 ice-chars"),
        ("abcd", "p" * 21 + " ", "ICE pwd must be 22 to 256 ice-chars"),
    ],
)
def test_parameters_reject_malformed_credentials(ufrag: str, pwd: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        IceParameters(ufrag, pwd)


# --- stun_username ---------------------------------------------------------------------------


def test_stun_username_of_binding_request() -> None:
    assert stun_username(binding_request()) == "srvufrag:cliufrag"


def _response() -> bytes:
    message = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.RESPONSE)
    message.attributes["USERNAME"] = "srvufrag:cliufrag"
    return bytes(message)


def _no_username() -> bytes:
    message = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    message.attributes["PRIORITY"] = 1
    return bytes(message)


def _bad_utf8() -> bytes:
    data = bytearray(binding_request(username="srvufrag:xx"))
    data[24] = 0xFF
    return bytes(data)


def _overflowing_attribute() -> bytes:
    data = bytearray(binding_request())
    struct.pack_into("!H", data, 22, 2000)
    return bytes(data)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(binding_request()[:19], id="short-header"),
        pytest.param(binding_request()[:-4], id="truncated"),
        pytest.param(_response(), id="response"),
        pytest.param(_no_username(), id="no-username"),
        pytest.param(_bad_utf8(), id="bad-utf8"),
        pytest.param(_overflowing_attribute(), id="attribute-overflow"),
        pytest.param(b"\x00\x01\x00\x00\x21\x12\xa4\x43" + bytes(12), id="bad-cookie"),
        pytest.param(b"\x80" + bytes(40), id="rtp"),
    ],
)
def test_stun_username_none_for_non_requests(data: bytes) -> None:
    assert stun_username(data) is None


# --- IceLite ---------------------------------------------------------------------------------


def test_lite_answers_valid_request() -> None:
    lite = IceLite(SERVER)
    request = binding_request()
    [raw] = lite.handle(request, CLIENT_ADDR, now=12.5)
    response = stun.parse_message(raw)  # checks FINGERPRINT
    assert response.message_class == stun.Class.RESPONSE
    assert response.transaction_id == stun.parse_message(request).transaction_id
    assert response.attributes["XOR-MAPPED-ADDRESS"] == CLIENT_ADDR
    assert "FINGERPRINT" in response.attributes
    assert response.check_message_integrity(SERVER.pwd.encode())
    assert lite.selected == CLIENT_ADDR
    assert lite.last_request_at == 12.5


def _without_fingerprint() -> bytes:
    message = stun.parse_message(binding_request())
    message.attributes.pop("FINGERPRINT")
    return bytes(message)


def _without_integrity() -> bytes:
    message = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    message.attributes["USERNAME"] = "srvufrag:cliufrag"
    message.add_fingerprint()
    return bytes(message)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(binding_request(pwd="wrongpasswordwrongpasswd"), id="wrong-password"),
        pytest.param(binding_request(username="otherufr:cliufrag"), id="unknown-username"),
        pytest.param(binding_request(username="srvufragx:cliufrag"), id="ufrag-prefix"),
        pytest.param(corrupt_fingerprint(binding_request()), id="bad-fingerprint"),
        pytest.param(binding_request()[:-8], id="truncated"),
        pytest.param(binding_request()[:30], id="truncated-attribute"),
        pytest.param(_without_integrity(), id="no-integrity"),
        pytest.param(_no_username(), id="no-username"),
        pytest.param(_response(), id="response"),
        pytest.param(b"\x00\x01\x00\x00", id="tiny"),
        pytest.param(b"", id="empty"),
    ],
)
def test_lite_ignores_invalid_requests(data: bytes) -> None:
    lite = IceLite(SERVER)
    assert lite.handle(data, CLIENT_ADDR, now=1.0) == []
    assert lite.selected is None
    assert lite.last_request_at is None


def test_lite_accepts_request_without_fingerprint() -> None:
    lite = IceLite(SERVER)
    assert len(lite.handle(_without_fingerprint(), CLIENT_ADDR, now=1.0)) == 1


def test_lite_never_raises_on_mutated_requests() -> None:
    rng = random.Random(7)
    valid = binding_request(use_candidate=True)
    lite = IceLite(SERVER)
    for _ in range(3000):
        data = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        cut = rng.randint(0, len(data)) if rng.random() < 0.3 else len(data)
        lite.handle(bytes(data[:cut]), CLIENT_ADDR, now=1.0)


def answer(request: bytes, pwd: str = CLIENT.pwd) -> bytes:
    """The client's signed success response to a binding request from the server."""
    message = stun.parse_message(request)
    response = stun.Message(stun.Method.BINDING, stun.Class.RESPONSE, transaction_id=message.transaction_id)
    response.attributes["XOR-MAPPED-ADDRESS"] = SERVER_ADDR
    response.add_message_integrity(pwd.encode())
    return bytes(response)


def test_lite_moves_to_a_new_address_only_when_it_answers_the_servers_own_check() -> None:
    lite = IceLite(SERVER)
    lite.remote = CLIENT
    new = ("127.0.0.1", 40001)
    assert len(lite.handle(binding_request(), CLIENT_ADDR, now=1.0)) == 1
    assert lite.selected == CLIENT_ADDR and lite.probing is None
    # A valid check from elsewhere is answered, and that address gets a check of the server's own.
    response, probe = lite.handle(binding_request(use_candidate=True), new, now=2.0)
    assert stun.parse_message(response).message_class == stun.Class.RESPONSE
    check = stun.parse_message(probe)
    assert check.message_class == stun.Class.REQUEST
    assert check.attributes["USERNAME"] == "cliufrag:srvufrag"
    assert "ICE-CONTROLLED" in check.attributes and "PRIORITY" in check.attributes
    assert check.check_message_integrity(CLIENT.pwd.encode())
    assert lite.selected == CLIENT_ADDR and lite.probing == new and lite.last_request_at == 2.0
    # Within the interval, more checks from there are answered but not probed again.
    assert len(lite.handle(binding_request(), new, now=2.1)) == 1
    # Wrong signature, wrong address, wrong transaction: no move.
    assert lite.handle(answer(probe, pwd=SERVER.pwd), new, now=2.2) == []
    assert lite.handle(answer(probe), ("127.0.0.1", 40002), now=2.2) == []
    assert lite.handle(answer(binding_request()), new, now=2.2) == []
    assert lite.selected == CLIENT_ADDR
    # The signed answer from the new address moves the path.
    assert lite.handle(answer(probe), new, now=2.3) == []
    assert lite.selected == new and lite.probing is None


def test_lite_follows_a_nominating_check_not_the_pairs_a_browser_keeps_checking_beside_its_choice() -> None:
    lite = IceLite(SERVER)
    lite.remote = CLIENT
    other = ("::1", 40001, 0, 0)
    lite.handle(binding_request(), CLIENT_ADDR, now=1.0)
    # Checks without USE-CANDIDATE from another pair are answered; the path stays while the chosen one checks.
    for second in range(2, 30, 2):
        assert len(lite.handle(binding_request(), other, now=float(second))) == 1
        assert len(lite.handle(binding_request(use_candidate=True), CLIENT_ADDR, now=second + 0.5)) == 1
    assert lite.selected == CLIENT_ADDR and lite.probing is None
    # The selected address silent for SELECTED_SILENCE (a dead path): a check that does not nominate may move it.
    _, probe = lite.handle(binding_request(), other, now=29.0 + SELECTED_SILENCE)
    lite.handle(answer(probe), other, now=29.1 + SELECTED_SILENCE)
    assert lite.selected == other
    # A nominating check moves it at once (once its address answers).
    _, probe = lite.handle(binding_request(use_candidate=True), CLIENT_ADDR, now=42.0)
    lite.handle(answer(probe), CLIENT_ADDR, now=42.1)
    assert lite.selected == CLIENT_ADDR


def test_lite_never_moves_to_an_address_that_does_not_answer() -> None:
    lite = IceLite(SERVER)
    lite.remote = CLIENT
    lite.handle(binding_request(), CLIENT_ADDR, now=1.0)
    stranger = ("127.0.0.3", 40000)
    probes = [lite.handle(binding_request(use_candidate=True), stranger, now=1.0 + i * 0.1)[1:] for i in range(50)]
    assert lite.selected == CLIENT_ADDR
    assert 5 <= sum(len(p) for p in probes) <= 11  # one probe per PROBE_INTERVAL, however many checks come


def test_lite_answers_controlled_peer_with_role_conflict() -> None:
    lite = IceLite(SERVER)
    [raw] = lite.handle(binding_request(controlled=True), CLIENT_ADDR, now=1.0)
    response = stun.parse_message(raw)
    assert response.message_class == stun.Class.ERROR
    assert response.error_code == 487
    assert response.check_message_integrity(SERVER.pwd.encode())
    assert lite.selected is None


# --- IceController ---------------------------------------------------------------------------


def test_controller_requests_carry_controlling_attributes() -> None:
    controller = IceController(CLIENT, SERVER, [SERVER_ADDR, ("127.0.0.1", 50001)])
    sent = controller.start(now=0.0)
    assert [addr for _, addr in sent] == [SERVER_ADDR, ("127.0.0.1", 50001)]
    for raw, _ in sent:
        request = stun.parse_message(raw)
        assert request.message_class == stun.Class.REQUEST
        assert request.attributes["USERNAME"] == "srvufrag:cliufrag"
        assert request.attributes["PRIORITY"] == PRFLX_PRIORITY
        assert request.attributes["ICE-CONTROLLING"] == controller.tie_breaker
        assert "USE-CANDIDATE" in request.attributes
        assert "FINGERPRINT" in request.attributes
        assert request.check_message_integrity(SERVER.pwd.encode())
        assert stun_username(raw) == "srvufrag:cliufrag"
    assert controller.state == "checking"


def test_controller_connects_to_lite_agent() -> None:
    lite = IceLite(SERVER)
    controller = IceController(CLIENT, SERVER, [SERVER_ADDR])
    [(request, addr)] = controller.start(now=0.0)
    [response] = lite.handle(request, CLIENT_ADDR, now=0.01)
    assert controller.handle(response, addr, now=0.02) is None
    assert controller.state == "connected"
    assert controller.selected == SERVER_ADDR
    assert lite.selected == CLIENT_ADDR


def test_controller_retransmits_with_backoff_then_fails() -> None:
    controller = IceController(CLIENT, SERVER, [SERVER_ADDR], connect_timeout=3.0)
    sent_at = []
    now = 0.0
    sent = controller.start(now)
    while controller.state == "checking":
        sent_at += [now] * len(sent)
        deadline = controller.next_deadline
        assert deadline is not None
        now = deadline
        sent = controller.poll(now)
    gaps = [round(b - a, 3) for a, b in zip(sent_at, sent_at[1:])]
    assert gaps[:6] == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]
    assert controller.state == "failed"
    assert now == pytest.approx(3.0)
    assert controller.next_deadline is None
    assert controller.poll(now + 1) == []


def test_controller_ignores_bad_responses() -> None:
    lite = IceLite(SERVER)
    controller = IceController(CLIENT, SERVER, [SERVER_ADDR])
    [(request, _)] = controller.start(now=0.0)
    [good] = lite.handle(request, CLIENT_ADDR, now=0.0)
    assert good is not None
    [other_tid] = lite.handle(binding_request(), CLIENT_ADDR, now=0.0)
    assert other_tid is not None
    # Right transaction id but signed with another password.
    forged = stun.parse_message(good)
    forged.add_message_integrity(b"x" * 24)
    for data, addr in [
        (good, ("127.0.0.1", 50009)),
        (other_tid, SERVER_ADDR),
        (bytes(forged), SERVER_ADDR),
        (good[:-4], SERVER_ADDR),
        (request, SERVER_ADDR),
    ]:
        controller.handle(data, addr, now=0.1)
        assert controller.state == "checking"
    controller.handle(good, SERVER_ADDR, now=0.1)
    assert controller.state == "connected"


def test_controller_answers_checks_from_full_ice_remote() -> None:
    controller = IceController(CLIENT, SERVER, [SERVER_ADDR])
    controller.start(now=0.0)
    # The remote's request: USERNAME "<our ufrag>:<its ufrag>", signed with our password.
    remote = IceController(SERVER, CLIENT, [CLIENT_ADDR])
    [(request, _)] = remote.start(now=0.0)
    raw = controller.handle(request, SERVER_ADDR, now=0.0)
    assert raw is not None
    assert remote.handle(raw, CLIENT_ADDR, now=0.0) is None
    assert remote.state == "connected"
    assert controller.handle(binding_request(username="cliufrag:srvufrag", pwd="w" * 24), SERVER_ADDR, 0.0) is None


def _connected_pair(consent_timeout: float = 30.0) -> tuple[IceLite, IceController]:
    lite = IceLite(SERVER)
    controller = IceController(CLIENT, SERVER, [SERVER_ADDR], consent_timeout=consent_timeout)
    [(request, _)] = controller.start(now=0.0)
    [response] = lite.handle(request, CLIENT_ADDR, now=0.0)
    assert response is not None
    controller.handle(response, SERVER_ADDR, now=0.0)
    assert controller.state == "connected"
    return lite, controller


def test_controller_consent_checks_every_five_seconds_with_jitter() -> None:
    lite, controller = _connected_pair()
    now = 0.0
    for _ in range(20):
        deadline = controller.next_deadline
        assert deadline is not None
        assert 4.0 <= deadline - now <= 6.0
        now = deadline
        [(request, addr)] = controller.poll(now)
        assert addr == SERVER_ADDR
        [response] = lite.handle(request, CLIENT_ADDR, now)
        assert response is not None and lite.last_request_at == now
        controller.handle(response, SERVER_ADDR, now)
        assert controller.consent_at == now
    assert controller.state == "connected"


def test_controller_consent_lost_without_responses() -> None:
    _, controller = _connected_pair(consent_timeout=30.0)
    now = 0.0
    sent = 0
    while controller.state == "connected":
        deadline = controller.next_deadline
        assert deadline is not None
        now = deadline
        sent += len(controller.poll(now))
    assert controller.state == "failed"
    assert now == pytest.approx(30.0)
    assert 5 <= sent <= 7


def test_controller_start_twice_is_an_error() -> None:
    controller = IceController(CLIENT, SERVER, [SERVER_ADDR])
    controller.start(now=0.0)
    with pytest.raises(ValueError, match="^ICE controller already started$"):
        controller.start(now=0.0)
