"""Consumer header rewriting, driven through a real Producer -> Consumer pair.

The subscriber's transport keeps a real Transport but its connection is replaced by a recorder of what
Consumer.forward hands to send_rtp (the unit's output, before SRTP). Output packets are parsed with
aiortc's RtpPacket, an independent RTP implementation.
"""

from __future__ import annotations

import struct

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from sfuctl.rtc.rtp import build_extension_block, build_packet
from sfuctl.rtc.sdp import AUDIO_LEVEL_URI, MID_URI, VIDEO_FEEDBACK, Codec
from sfuctl.server.config import ServerConfig
from sfuctl.server.consumer import Consumer
from sfuctl.rtc.simulcast import SimulcastOffer
from sfuctl.server.producer import Producer
from sfuctl.server.simulcast_consumer import SimulcastConsumer
from sfuctl.server.simulcast_producer import SimulcastProducer
from sfuctl.server.transport import Transport
from sfuctl.server.worker import Worker

PUBLISHER_SSRC = 0x11223344
PUBLISHER_VP8 = Codec("VP8", 90000, 96, feedback=VIDEO_FEEDBACK)
PUBLISHER_OPUS = Codec("opus", 48000, 111, 2)
# The publisher's own extensions: its MID under id 9 and abs-send-time under id 3; neither may leak through.
PUBLISHER_EXTENSIONS = build_extension_block([(9, b"0"), (3, b"\x12\x34\x56")])
# VP8 payload descriptor with S=1, PID=0, then a frame header whose P bit is 0: a keyframe start (RFC 7741).
VP8_KEYFRAME = bytes([0x10, 0x00, 0x9D, 0x01, 0x2A]) + bytes(range(40))
OPUS_FRAME = bytes(range(60))


class RecordingConnection:
    """Stands in for the subscriber's Connection: keeps each packet Consumer.forward sends."""

    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def send_rtp(self, packet: bytes) -> None:
        self.packets.append(packet)


class NotifiedPeer:
    """Stands in for the subscriber's Peer: keeps the notifications a consumer sends it."""

    def __init__(self) -> None:
        self.notifications: list[tuple[str, dict]] = []

    def notify(self, method: str, params: dict) -> None:
        self.notifications.append((method, params))


def make_transports() -> tuple[Transport, Transport, RecordingConnection]:
    """A publisher transport, and a connected subscriber transport whose connection records what it sends."""
    worker = Worker(ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0)))
    publisher_transport = Transport(id="t-pub", worker=worker, cname="pub", on_closed=lambda t, s: None)
    subscriber_transport = Transport(id="t-sub", worker=worker, cname="sub", on_closed=lambda t, s: None)
    recorder = RecordingConnection()
    subscriber_transport.connection = recorder  # type: ignore[assignment]
    subscriber_transport.connected = True
    return publisher_transport, subscriber_transport, recorder


def make_pair(kind: str, consumer_codec: Codec, extensions: dict[str, int], mid: str = "v1"):
    """A producer on a publisher transport and one consumer on a recording subscriber transport."""
    publisher_transport, subscriber_transport, recorder = make_transports()
    codec = PUBLISHER_VP8 if kind == "video" else PUBLISHER_OPUS
    producer = Producer(
        id="p-1", peer=None, transport=publisher_transport, kind=kind, codec=codec, ssrc=PUBLISHER_SSRC, mid="0"
    )
    consumer = Consumer(
        id="c-1",
        peer=None,
        producer=producer,
        transport=subscriber_transport,
        codec=consumer_codec,
        mid=mid,
        extensions=extensions,
    )
    producer.add_consumer(consumer)
    subscriber_transport.add_consumer(consumer)
    return producer, consumer, recorder


def publisher_packet(
    sequence: int, timestamp: int, payload: bytes, marker: bool = False, padding: int = 0, kind: str = "video"
) -> bytes:
    """A packet as a publisher sends it, with its own extensions and optional RTP padding (RFC 3550 5.1)."""
    payload_type = PUBLISHER_VP8.payload_type if kind == "video" else PUBLISHER_OPUS.payload_type
    data = build_packet(payload_type, sequence, timestamp, PUBLISHER_SSRC, payload, marker, PUBLISHER_EXTENSIONS)
    if not padding:
        return data
    return bytes([data[0] | 0x20]) + data[1:] + bytes(padding - 1) + bytes([padding])


def parse(data: bytes, mid_id: int | None) -> RtpPacket:
    params = RTCRtpParameters(
        headerExtensions=[RTCRtpHeaderExtensionParameters(id=mid_id, uri=MID_URI)] if mid_id else []
    )
    extensions_map = HeaderExtensionsMap()
    extensions_map.configure(params)
    return RtpPacket.parse(data, extensions_map)


# -- numbering: sequence numbers and timestamps stay continuous through every wrap --------------------------
@pytest.mark.parametrize(
    ("first_sequence", "first_timestamp", "count", "timestamp_step"),
    [
        pytest.param(65530, 0x10000, 12, 3000, id="input-sequence-wraps"),
        pytest.param(100, 0xFFFFFFFF - 4000, 12, 3000, id="input-timestamp-wraps"),
        pytest.param(65535, 0xFFFFFFFF, 3, 1, id="both-wrap-on-the-next-packet"),
        # 70000 packets one second apart: whatever random start the consumer took, its own sequence numbers
        # (2^16) and timestamps (2^32 ticks = 13 h at 90 kHz) must wrap at least once each.
        pytest.param(0, 0, 70000, 90000, id="output-sequence-and-timestamp-wrap"),
    ],
)
async def test_numbering_is_continuous_across_wraps(
    first_sequence: int, first_timestamp: int, count: int, timestamp_step: int
) -> None:
    producer, consumer, recorder = make_pair("video", Codec("VP8", 90000, 100, feedback=VIDEO_FEEDBACK), {MID_URI: 1})
    for i in range(count):
        sequence = (first_sequence + i) & 0xFFFF
        timestamp = (first_timestamp + i * timestamp_step) & 0xFFFFFFFF
        producer.receive(publisher_packet(sequence, timestamp, VP8_KEYFRAME), now=i * 0.02)
    assert len(recorder.packets) == count
    headers = [struct.unpack_from("!HI", p, 2) for p in recorder.packets]
    out_sequence0, out_timestamp0 = headers[0]
    for i, (out_sequence, out_timestamp) in enumerate(headers):
        assert out_sequence == (out_sequence0 + i) & 0xFFFF, i
        assert out_timestamp == (out_timestamp0 + i * timestamp_step) & 0xFFFFFFFF, i
    if count > 0x10000:
        sequences = [s for s, _ in headers]
        timestamps = [t for _, t in headers]
        assert any(b < a for a, b in zip(sequences, sequences[1:]))
        assert any(b < a for a, b in zip(timestamps, timestamps[1:]))
    assert consumer.meter.packets == count
    assert consumer.meter.bytes == sum(len(p) for p in recorder.packets)


# -- header fields: SSRC, payload type, marker, padding and the subscriber's MID extension -----------------------
@pytest.mark.parametrize(
    ("kind", "payload_type", "mid_id", "mid", "marker", "padding"),
    [
        pytest.param("video", 100, 1, "v1", True, 0, id="vp8-marker-mid-id-1"),
        pytest.param("video", 98, 14, "7", False, 4, id="vp8-padding-mid-id-14"),
        pytest.param("video", 96, 200, "video-2", True, 1, id="two-byte-extension-id-200"),
        pytest.param("video", 120, None, "v1", True, 0, id="no-mid-negotiated"),
        pytest.param("audio", 109, 5, "a", True, 3, id="opus-marker-padding"),
    ],
)
async def test_header_is_rewritten_for_the_subscriber(
    kind: str, payload_type: int, mid_id: int | None, mid: str, marker: bool, padding: int
) -> None:
    codec = Codec("VP8", 90000, payload_type, feedback=VIDEO_FEEDBACK) if kind == "video" else Codec("opus", 48000, payload_type, 2)
    extensions = {MID_URI: mid_id} if mid_id is not None else {}
    producer, consumer, recorder = make_pair(kind, codec, extensions, mid=mid)
    payload = VP8_KEYFRAME if kind == "video" else OPUS_FRAME
    sent = [
        publisher_packet(1000, 5000, payload, marker=False, kind=kind),
        publisher_packet(1001, 5000, payload, marker=marker, padding=padding, kind=kind),
    ]
    for data in sent:
        producer.receive(data, now=0.0)
    assert len(recorder.packets) == 2
    out = parse(recorder.packets[1], mid_id)
    assert out.version == 2
    assert out.ssrc == consumer.ssrc != PUBLISHER_SSRC
    assert out.payload_type == payload_type
    assert out.marker == int(marker)
    assert out.csrc == []
    assert out.padding_size == padding
    assert out.payload == payload
    assert (recorder.packets[1][0] & 0x20 != 0) == bool(padding)
    # The publisher's extensions (ids 9 and 3) are gone; the subscriber's MID is written under its id.
    assert out.extensions.mid == (mid if mid_id is not None else None)
    assert out.extensions.abs_send_time is None
    assert (recorder.packets[1][0] & 0x10 != 0) == (mid_id is not None)
    # The padding travels as it came: the same bytes after the header, count byte included.
    in_tail = sent[1][-(len(payload) + padding) :]
    assert recorder.packets[1].endswith(in_tail)
    first = parse(recorder.packets[0], mid_id)
    assert first.marker == 0 and first.padding_size == 0
    assert out.sequence_number == (first.sequence_number + 1) & 0xFFFF
    assert out.timestamp == first.timestamp



# -- audio level (RFC 6464): read from the publisher's extension, copied under the subscriber's id -----------
async def test_the_audio_level_is_read_and_forwarded_under_the_subscribers_id_only_when_negotiated() -> None:
    worker = Worker(ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0)))
    publisher_transport = Transport(id="t-pub", worker=worker, cname="pub", on_closed=lambda t, s: None)
    producer = Producer(
        id="p-1", peer=None, transport=publisher_transport, kind="audio", codec=PUBLISHER_OPUS,
        ssrc=PUBLISHER_SSRC, mid="0", audio_level_id=4,
    )  # fmt: skip
    recorders = {}
    for name, extensions in (("with", {MID_URI: 1, AUDIO_LEVEL_URI: 7}), ("without", {MID_URI: 1})):
        transport = Transport(id=f"t-{name}", worker=worker, cname=name, on_closed=lambda t, s: None)
        recorders[name] = transport.connection = RecordingConnection()  # type: ignore[assignment]
        transport.connected = True
        consumer = Consumer(
            id=f"c-{name}", peer=None, producer=producer, transport=transport, codec=PUBLISHER_OPUS, mid="a1",
            extensions=extensions,
        )  # fmt: skip
        producer.add_consumer(consumer)
        transport.add_consumer(consumer)
    levels = [(True, 20), (True, 45), (False, 90), (False, 127)]  # (voice, level in -dBov)
    for seq, (voice, level) in enumerate(levels):
        block = build_extension_block([(9, b"0"), (4, bytes([(0x80 if voice else 0) | level]))])
        producer.receive(build_packet(111, seq, seq * 960, PUBLISHER_SSRC, OPUS_FRAME, False, block), now=seq * 0.02)
        assert producer.audio_level_dbov == -level
    params = RTCRtpParameters(headerExtensions=[
        RTCRtpHeaderExtensionParameters(id=1, uri=MID_URI), RTCRtpHeaderExtensionParameters(id=7, uri=AUDIO_LEVEL_URI),
    ])  # fmt: skip
    extensions_map = HeaderExtensionsMap()
    extensions_map.configure(params)
    received = [RtpPacket.parse(p, extensions_map) for p in recorders["with"].packets]
    assert [p.extensions.audio_level for p in received] == levels
    assert all(p.extensions.mid == "a1" and p.payload == OPUS_FRAME for p in received)
    plain = [RtpPacket.parse(p, extensions_map) for p in recorders["without"].packets]
    assert [p.extensions.audio_level for p in plain] == [None] * 4 and all(p.extensions.mid == "a1" for p in plain)
    # Two of the four packets were speech (-50 dBov or louder); the share resets when taken.
    assert producer.take_speech_share() == 0.5 and producer.take_speech_share() == 0.0


# -- padding-only packets: a publisher's bandwidth probes are neither media nor forwarded ------------------------
async def test_simulcast_padding_only_packets_are_not_forwarded_nor_counted_as_the_encodings_bitrate() -> None:
    """libwebrtc without RTX probes its uplink with padding-only packets on a video SSRC, also on an encoding it no
    longer encodes. They count as received (RTCP) but not in the encoding's bitrate, which the allocator reads
    to know which encodings are sent; the consumer forwarding that encoding leaves them out without a gap."""
    publisher_transport, subscriber_transport, recorder = make_transports()
    low, high = 0x1000, 0x2000
    producer = SimulcastProducer(
        id="p-1", peer=None, transport=publisher_transport, codec=PUBLISHER_VP8, mid="0",
        simulcast=SimulcastOffer(ssrcs=(low, high)), rid_extension_id=None,
    )
    consumer = SimulcastConsumer(
        id="c-1", peer=NotifiedPeer(), producer=producer, transport=subscriber_transport,
        codec=Codec("VP8", 90000, 100, feedback=VIDEO_FEEDBACK), mid="v1", extensions={},
    )
    producer.add_consumer(consumer)
    subscriber_transport.add_consumer(consumer)

    def packet(ssrc: int, sequence: int, timestamp: int, payload: bytes, padding: int = 0) -> bytes:
        data = build_packet(PUBLISHER_VP8.payload_type, sequence, timestamp, ssrc, payload, not padding, b"")
        return bytes([data[0] | 0x20]) + data[1:] + bytes(padding - 1) + bytes([padding]) if padding else data

    frame = bytes([0x10, 0x01]) + bytes(range(30))  # a VP8 interframe start
    sent = [
        packet(high, 10, 9000, VP8_KEYFRAME),
        packet(high, 11, 9000, b"", padding=255),
        packet(high, 12, 9000, b"", padding=255),
        packet(high, 13, 12600, frame),
        packet(high, 14, 12600, b"", padding=200),
        packet(high, 15, 16200, frame),
    ]
    for layer in producer.layers:
        layer.meter.sample(0.0)
    for data in sent:
        producer.layers[1].receive(data, now=0.0)
    for sequence in range(100, 110):  # the lower encoding is no longer encoded: padding alone
        producer.layers[0].receive(packet(low, sequence, 3000, b"", padding=255), now=0.0)
    for layer in producer.layers:
        layer.meter.sample(1.0)

    media = [parse(p, None) for p in recorder.packets]
    assert [p.payload for p in media] == [VP8_KEYFRAME, frame, frame]
    assert all(p.padding_size == 0 for p in media)
    assert [(p.sequence_number - media[0].sequence_number) & 0xFFFF for p in media] == [0, 1, 2]
    assert [(p.timestamp - media[0].timestamp) & 0xFFFFFFFF for p in media] == [0, 3600, 7200]
    # A NACK of the last number maps back to the publisher's packet 15.
    assert consumer.switch.lookup(media[2].sequence_number).source_seq(media[2].sequence_number) == 15
    assert producer.layers[1].reception.packets_received == 6
    assert producer.layers[1].meter.bytes == sum(len(sent[i]) for i in (0, 3, 5))
    assert producer.layers[0].reception.packets_received == 10
    assert producer.layers[0].meter.bitrate_bps == 0
    assert [layer.bitrate_bps > 0 for layer in consumer.wish().layers] == [False, True]
    assert consumer.peer.notifications == [("consumerLayersChanged", {"consumerId": "c-1", "spatialLayer": 1, "temporalLayer": None})]


async def test_padding_only_packets_are_left_out_without_a_gap_and_nacks_map_around_them() -> None:
    producer, consumer, recorder = make_pair("video", Codec("VP8", 90000, 100, feedback=VIDEO_FEEDBACK), {})
    frame = bytes([0x10, 0x01]) + bytes(range(30))  # a VP8 interframe start
    sent = [
        publisher_packet(500, 9000, VP8_KEYFRAME, marker=True),
        publisher_packet(501, 9000, b"", padding=255),
        publisher_packet(502, 12600, frame, marker=True),
        publisher_packet(503, 12600, b"", padding=255),
        publisher_packet(504, 12600, b"", padding=100),
        publisher_packet(505, 16200, frame, marker=True),
    ]
    producer.meter.sample(0.0)
    for data in sent:
        producer.receive(data, now=0.0)
    producer.meter.sample(1.0)
    out = [parse(p, None) for p in recorder.packets]
    assert [p.payload for p in out] == [VP8_KEYFRAME, frame, frame]
    first = out[0].sequence_number
    assert [(p.sequence_number - first) & 0xFFFF for p in out] == [0, 1, 2]
    assert producer.reception.packets_received == 6
    assert (producer.meter.packets, producer.meter.bitrate_bps) == (3, 8 * sum(len(sent[i]) for i in (0, 2, 5)))
    # Each number sent maps back to the publisher's packet it was made from, before and after the gaps closed.
    for index, packet in enumerate(out):
        resent = consumer._retransmission(packet.sequence_number)
        assert resent is not None and parse(resent, None).payload == packet.payload, index
        assert parse(resent, None).timestamp == packet.timestamp
    assert consumer._retransmission((first + 3) & 0xFFFF) is None  # never sent
