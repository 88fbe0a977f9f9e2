"""CPU per output packet of the server's forwarding path alone, in one process: Producer.receive ->
Consumer.forward -> Connection.send_rtp (SRTP protect) -> the worker's SendBatch: one sendmmsg per input packet.

Real Worker, Transports, Producers and Consumers; each subscriber transport's Connection is given SRTP keys
directly (no ICE/DTLS: only the per-packet path is measured) and sends to a socket of its own that nobody
reads (the kernel drops what overflows, so no receiver is ever woken). Packets are fed back to back, so
caches stay warm: this is the floor of the path, not a served load (bench/forwarding.py measures that).

    python bench/forward_path.py [--subscribers 125] [--producers 8] [--seconds 4] [--no-send]
                                 [--audio [--audio-level] | --simulcast [--distinct] [--all-encodings]]
                                 [--transport-cc]

--audio forwards Opus (160-byte payloads) whose packets carry an RFC 6464 audio level; with --audio-level the
producers read it and the consumers copy it into their headers (negotiated on both ends), without it neither
end negotiated it: the two give the cost of audio-level forwarding.

--simulcast makes each producer a SimulcastProducer of 3 encodings and each consumer a SimulcastConsumer that
switched from the lowest encoding to the top one before the measurement (so it rewrites every packet's VP8
PictureID: the costlier case); the packets are the top encoding's, with a VP8 descriptor (15-bit PictureID).
All consumers of a producer then share one renumbering (as consumers that switch at the same keyframe do), so
the rewritten descriptor is made once per packet; --distinct gives each consumer a renumbering of its own (each
started on a lowest-encoding keyframe of its own), the worst case, where every consumer rewrites.
--all-encodings also feeds the two lower encodings, as a simulcast publisher sends them (1 packet of the lowest
and 3 of the middle one per 10 of the top, the simulcast test media's bitrates); nobody forwards them here, so
they count as input only, and the output packets are still the top encoding's.

--transport-cc negotiates transport-wide congestion control with every subscriber: each packet also takes a
transport-wide sequence and leaves its send time in the transport's history (its cost is the difference with
the same run without it).
"""

from __future__ import annotations

import argparse
import os
import socket
import time
import types

import pylibsrtp

from sfuctl.rtc.dtls import SRTP_PROFILES
from sfuctl.rtc.rtp import build_extension_block, build_packet, read_header
from sfuctl.rtc.vp8 import parse_descriptor
from sfuctl.rtc.sdp import AUDIO_LEVEL_URI, MID_URI, VIDEO_FEEDBACK, Codec
from sfuctl.rtc.simulcast import SimulcastOffer
from sfuctl.rtc.transport_feedback import TRANSPORT_CC_URI
from sfuctl.runtime import run
from sfuctl.server.config import ServerConfig
from sfuctl.server.consumer import Consumer
from sfuctl.server.producer import Producer
from sfuctl.server.simulcast_consumer import SimulcastConsumer
from sfuctl.server.simulcast_producer import SimulcastProducer
from sfuctl.server.transport import Transport
from sfuctl.server.worker import Worker

VP8 = Codec("VP8", 90000, 96, feedback=VIDEO_FEEDBACK)
PAYLOAD_SIZE = 936  # the default media's mean VP8 payload
OPUS = Codec("opus", 48000, 111, 2)
OPUS_PAYLOAD_SIZE = 160  # Opus at ~64 kbps in 20-ms packets


def outbound_session() -> pylibsrtp.Session:
    profile = SRTP_PROFILES[0]
    policy = pylibsrtp.Policy(
        key=os.urandom(profile.key_length + profile.salt_length),
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
        srtp_profile=profile.libsrtp_profile,
    )
    return pylibsrtp.Session(policy)


def vp8_packets(ssrc: int, picture_id: int, count: int = 0x10000) -> list[bytes]:
    """A keyframe's first packet, then packets continuing it: VP8 descriptor with a 15-bit PictureID."""
    key = bytes([0x90, 0x80, 0x80 | picture_id >> 8, picture_id & 0xFF, 0x00]) + os.urandom(PAYLOAD_SIZE - 5)
    rest = bytes([0x80, 0x80, 0x80 | picture_id >> 8, picture_id & 0xFF]) + os.urandom(PAYLOAD_SIZE - 4)
    extensions = build_extension_block([(9, b"0"), (3, b"\x01\x02\x03")])
    return [build_packet(96, seq, 3000 * (seq // 3), ssrc, key if seq == 0 else rest, seq % 3 == 2, extensions)
            for seq in range(count)]  # fmt: skip


def forwarded(packet: bytes) -> tuple:
    """The arguments a Producer hands its consumers for `packet` (before `now`)."""
    marker, _, sequence, timestamp, _, offset = read_header(packet)
    return packet[0], marker, sequence, timestamp, packet[offset:], True


async def measure(
    subscribers: int, producers: int, seconds: float, send: bool, audio: bool = False, level: bool = False,
    simulcast: bool = False, distinct: bool = False, all_encodings: bool = False, transport_cc: bool = False,
) -> dict:  # fmt: skip
    worker = Worker(ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0)))
    if send:
        await worker.start()
    sinks: list[socket.socket] = []
    publisher = types.SimpleNamespace(id="peer-pub", name="pub", cname="pub")
    sources = []
    for index in range(producers):
        transport = Transport(id=f"t-pub{index}", worker=worker, cname="pub", on_closed=lambda t, s: None)
        if simulcast:
            sources.append(SimulcastProducer(
                id=f"p{index}", peer=publisher, transport=transport, codec=VP8, mid="0",
                simulcast=SimulcastOffer(ssrcs=(3 * index + 1, 3 * index + 2, 3 * index + 3)), rid_extension_id=None,
            ))  # fmt: skip
            continue
        sources.append(
            Producer(
                id=f"p{index}", peer=publisher, transport=transport, kind="audio" if audio else "video",
                codec=OPUS if audio else VP8, ssrc=index + 1, mid="0", audio_level_id=1 if level else None,
            )
        )  # fmt: skip
    for index in range(subscribers):
        transport = Transport(id=f"t{index}", worker=worker, cname=f"sub{index}", on_closed=lambda t, s: None)
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))
        sinks.append(sink)
        connection = transport.connection
        connection.start_srtp(outbound_session(), None)  # keys without a handshake: only the send path is measured
        connection._remote_addr = sink.getsockname()
        transport.connected = True
        extensions = {MID_URI: 1, AUDIO_LEVEL_URI: 2} if level else {MID_URI: 1}
        if transport_cc:
            extensions[TRANSPORT_CC_URI] = 3
        for number, producer in enumerate(sources):
            kind = SimulcastConsumer if simulcast else Consumer
            consumer = kind(
                id=f"c{index}-{number}", peer=types.SimpleNamespace(notify=lambda method, params: None),
                producer=producer, transport=transport,
                codec=OPUS if audio else VP8, mid=str(number),
                extensions=extensions,
            )  # fmt: skip
            producer.add_consumer(consumer)
            transport.add_consumer(consumer)
    now = time.monotonic()
    receivers = sources
    if simulcast:  # every consumer starts on the lowest encoding, then switches to the top one at its keyframe
        keyframe = vp8_packets(0, 5000, count=1)[0]
        for producer in sources:
            for consumer in producer.consumers:
                consumer.set_target(0, now)
            if distinct:  # a lowest-encoding keyframe of its own to each consumer
                for number, consumer in enumerate(producer.consumers):
                    first, marker, sequence, timestamp, payload, _ = forwarded(vp8_packets(0, 5000 + number, count=1)[0])
                    d = parse_descriptor(payload)
                    consumer.forward_layer(
                        0, first, marker, sequence, timestamp, payload, True, d, payload[: d.size], payload[d.size :], {}, now
                    )
            else:
                producer.layers[0].receive(keyframe, now)
            for consumer in producer.consumers:
                consumer.set_target(2, now)
        packets = vp8_packets(0, 100)
        receivers = [producer.layers[2] for producer in sources]
        # the lower encodings' packets (no keyframe: nobody switches), interleaved as their bitrates have them
        lower = [(vp8_packets(0, 300)[1:], {0}), (vp8_packets(0, 200)[1:], {0, 3, 6})]
    elif audio:  # the publisher's audio level (id 1, -30 dBov, voice) beside its MID
        payload = os.urandom(OPUS_PAYLOAD_SIZE)
        extensions = build_extension_block([(9, b"0"), (1, bytes([0x80 | 30]))])
        packets = [build_packet(111, seq, seq * 960, 0, payload, False, extensions) for seq in range(0x10000)]
    else:  # VP8 keyframe starts (consumers wait for one), with the publisher's own MID and abs-send-time
        payload = bytes([0x10, 0x00]) + os.urandom(PAYLOAD_SIZE - 2)
        extensions = build_extension_block([(9, b"0"), (3, b"\x01\x02\x03")])
        packets = [build_packet(96, seq, seq * 3000, 0, payload, seq % 3 == 0, extensions) for seq in range(0x10000)]
    sent = 0
    fed = [0, 0]  # lower-encoding packets fed so far
    # The event loop sends what a received packet's callback queued once that callback is over (SendBatch).
    flush = worker.send_batch.flush if worker.send_batch is not None else lambda: None
    started = time.process_time()
    for number, data in enumerate(packets):  # one pass at most: sequence numbers never repeat (no SRTP replay)
        for producer in receivers:
            producer.receive(data, now)
            flush()
        if simulcast and all_encodings:
            for layer, (stream, slots) in enumerate(lower):
                if number % 10 in slots:
                    low = stream[fed[layer]]
                    fed[layer] += 1
                    for producer in sources:
                        producer.layers[layer].receive(low, now)
        sent += producers * subscribers
        if time.process_time() - started >= seconds:
            break
    used = time.process_time() - started
    errors = sum(t.connection.srtp_errors for t in worker.transports)
    for sink in sinks:
        sink.close()
    await worker.close()
    if errors:
        raise RuntimeError(f"{errors} SRTP errors: the measurement is void")
    return {"us_per_packet": round(used * 1e6 / sent, 3), "packets": sent, "send": send}


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=125)
    parser.add_argument("--producers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0, help="CPU seconds to measure")
    parser.add_argument("--no-send", action="store_true", help="no socket: protect, but drop before sendto")
    parser.add_argument("--audio", action="store_true", help="forward Opus with audio levels instead of VP8")
    parser.add_argument("--audio-level", action="store_true", help="with --audio: read and forward the levels")
    parser.add_argument("--simulcast", action="store_true", help="simulcast producers and consumers (top encoding)")
    parser.add_argument("--distinct", action="store_true", help="with --simulcast: a renumbering per consumer")
    parser.add_argument("--all-encodings", action="store_true", help="with --simulcast: the lower encodings arrive too")
    parser.add_argument("--transport-cc", action="store_true", help="stamp transport-wide sequences (send history)")
    args = parser.parse_args()
    result = run(measure(
        args.subscribers, args.producers, args.seconds, not args.no_send, args.audio, args.audio_level, args.simulcast,
        args.distinct, args.all_encodings, args.transport_cc,
    ))  # fmt: skip
    print(
        f"{args.producers} {'simulcast ' if args.simulcast else ''}producers{' (distinct)' if args.distinct else ''} x {args.subscribers} subscribers"
        f"{'' if result['send'] else ' (no sendto)'}: {result['us_per_packet']} µs CPU per output packet"
        f" over {result['packets']:,} packets"
    )


if __name__ == "__main__":
    cli()
