"""Property tests of every parser that takes bytes from the network, seeded with packets captured from a real call.

Each example is a captured packet (tests/data/seeds.json, made by tests/data/capture_seeds.py) with a few
mutations: bytes flipped or set, cut short, extended, a slice repeated, or (for text) lines dropped, repeated or
edited, or (for signaling) a field replaced by any JSON. Each parser must return a value or raise its documented error, never anything else; at least 30% of the
examples must still parse, so that the mutations reach past the first length check. Hypothesis runs
derandomized: the same examples on every run.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sfuctl.rtc import rtcp
from sfuctl.rtc.dtls import RECORD_HEADER_LENGTH, split_records
from sfuctl.rtc.ice import IceLite, IceParameters, stun_username
from sfuctl.rtc.rtcp_router import RtcpRouter
from sfuctl.rtc.rtp import is_keyframe, read_extensions, read_header
from sfuctl.rtc.sdp import parse_offer
from sfuctl.server.messages import RequestError, parse_request

SEEDS = json.loads((Path(__file__).parent / "data" / "seeds.json").read_text())
EXAMPLES = 400
PARSING_SHARE = 0.3
# RTCP types the captured call did not carry, built by the project's own writers.
BUILT_RTCP = [
    bytes(rtcp.Fir(1, [(2, 7), (3, 8)])),
    bytes(rtcp.Bye([1, 2])),
    bytes(rtcp.Remb(1, 1_500_000, [2, 3])),
    bytes(rtcp.Pli(1, 2)) + bytes(rtcp.Nack(1, 2, [10, 12, 40])) + bytes(rtcp.Bye([1])),
]
SETTINGS = settings(
    max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def seeds(kind: str) -> list[bytes]:
    return [bytes.fromhex(h) for h in SEEDS[kind]]


@st.composite
def mutated(draw: st.DrawFn, packets: list[bytes]) -> bytes:
    """A seed with 0 to 2 mutations."""
    data = bytearray(draw(st.sampled_from(packets)))
    for _ in range(draw(st.integers(0, 2))):
        op = draw(st.sampled_from(["flip", "set", "cut", "extend", "repeat"]))
        if not data:
            op = "extend"
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[at] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]))
        elif op == "cut":
            del data[at:]
        elif op == "extend":
            data += draw(st.binary(min_size=1, max_size=16))
        else:
            end = min(len(data), at + draw(st.integers(1, 16)))
            data[at:at] = data[at:end]
    return bytes(data)


@st.composite
def mutated_text(draw: st.DrawFn, texts: list[str]) -> str:
    """A text seed with 0 to 3 line-level mutations."""
    lines = draw(st.sampled_from(texts)).split("\n")
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["drop", "repeat", "edit", "cut"]))
        at = draw(st.integers(0, max(len(lines) - 1, 0)))
        if op == "drop" and len(lines) > 1:
            del lines[at]
        elif op == "repeat":
            lines.insert(at, lines[at])
        elif op == "edit" and lines[at]:
            pos = draw(st.integers(0, len(lines[at]) - 1))
            lines[at] = lines[at][:pos] + draw(st.sampled_from(["", " ", ":", "0", "x", "\x00", "é", "{", "]"])) + lines[at][pos + 1 :]
        elif op == "cut":
            lines[at] = lines[at][: draw(st.integers(0, len(lines[at])))]
    return "\n".join(lines)


def check(strategy: st.SearchStrategy, parse: Callable[[object], object], errors: tuple[type[Exception], ...]) -> Counter:
    """Run `parse` on every example: a value or one of `errors`, never another exception; >= 30% parse."""
    outcomes: Counter = Counter()

    @SETTINGS
    @given(strategy)
    def run(data: object) -> None:
        try:
            parse(data)
        except errors:
            outcomes["refused"] += 1
        else:
            outcomes["parsed"] += 1

    run()
    total = outcomes["parsed"] + outcomes["refused"]
    assert outcomes["parsed"] >= PARSING_SHARE * total, outcomes
    return outcomes


def test_rtp_header_and_extensions():
    def parse(data: bytes) -> None:
        marker, payload_type, _, _, _, offset = read_header(data)
        read_extensions(data)
        is_keyframe("VP8", data[offset:])
        is_keyframe("H264", data[offset:])

    check(mutated(seeds("rtp")), parse, (ValueError,))


def test_rtcp_compound_of_every_type():
    packets = seeds("rtcp") + BUILT_RTCP
    router = RtcpRouter()

    def parse(data: bytes) -> None:
        router.route(data)  # the server's entry point never raises: it counts what it could not parse
        rtcp.parse_compound(data)

    outcomes = check(mutated(packets), parse, (ValueError,))
    assert outcomes["refused"] > 0


def test_stun_binding_requests():
    lite = IceLite(IceParameters("srvufrag", "serverpasswordserverpass"))

    def parse(data: bytes) -> None:
        assert isinstance(lite.handle(data, ("127.0.0.1", 5000), 1.0), list)  # never raises
        username = stun_username(data)
        if username is None:
            raise ValueError("not a binding request")

    check(mutated(seeds("stun")).map(fix_stun), parse, (ValueError,))


def fix_stun(data: bytes) -> bytes:
    """Rewrite the length and a trailing FINGERPRINT, as anyone can: the mutations then reach the attributes."""
    if len(data) < 20:
        return data
    data = data[:2] + (len(data) - 20).to_bytes(2, "big") + data[4:]
    if len(data) >= 28 and data[-8:-6] == b"\x80\x28":
        crc = (zlib.crc32(data[:-8]) ^ 0x5354554E) & 0xFFFFFFFF
        return data[:-4] + crc.to_bytes(4, "big")
    return data


def test_dtls_record_split():
    def parse(data: bytes) -> None:
        datagrams = split_records(data)
        assert b"".join(datagrams) == data
        pos = 0
        while pos + RECORD_HEADER_LENGTH <= len(data):
            pos += RECORD_HEADER_LENGTH + int.from_bytes(data[pos + 11 : pos + 13], "big")
        if pos != len(data):
            raise ValueError("a record runs past the datagram")

    check(mutated(seeds("dtls")), parse, (ValueError,))


def test_sdp_offers():
    check(mutated_text(SEEDS["sdp"]), parse_offer, (ValueError,))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=40,
)


@st.composite
def mutated_request(draw: st.DrawFn, texts: list[str]) -> str:
    """A signaling request with a field replaced, dropped or added (any JSON, deep ones included), or its text
    edited (one in four)."""
    if draw(st.integers(0, 3)) == 0:
        return draw(mutated_text([t.replace(", ", ",\n") for t in texts]))
    message = json.loads(draw(st.sampled_from(texts)))
    target = message if draw(st.booleans()) or not isinstance(message.get("params"), dict) else message["params"]
    op = draw(st.sampled_from(["replace", "drop", "add"]))
    key = draw(st.sampled_from(sorted(target))) if target else "id"
    if op == "drop":
        target.pop(key, None)
    else:
        target[key if op == "replace" else draw(st.text(max_size=6))] = draw(JSON_VALUES)
    return json.dumps(message)


def test_signaling_messages():
    texts = SEEDS["signaling"] + [json.dumps({"id": 9, "method": "publish", "params": {"sdp": SEEDS["sdp"][0]}})]
    check(mutated_request(texts), lambda text: parse_request(text, 256 * 1024, 32), (RequestError,))
