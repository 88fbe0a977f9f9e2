"""Bot parts without a server: frame accounting, STUN RTT, pacing, sending, receiving, planning, aggregation."""

from __future__ import annotations

import asyncio
import random
import struct

import pytest

from sfuctl.bots.config import BotsConfig, plan_bots
from sfuctl.bots.decode import FrameDecoder, h264_annex_b, starts_keyframe, vp8_data
from sfuctl.bots.frames import FrameTracker
from sfuctl.bots.impairment import ImpairmentConfig
from sfuctl.bots.pacer import Pacer
from sfuctl.bots.publisher import Publisher, StreamSender
from sfuctl.bots.report import percentile, summarize
from sfuctl.bots.stats import BitratePeaks, RoomCounters, Sample, merge_counters
from sfuctl.bots.stun_rtt import StunRtt
from sfuctl.bots.subscriber import ConsumerInfo, ConsumerStream, Subscriber
from sfuctl.encoded import EncodedFrame, EncodedTrack, load_track
from sfuctl.media import MediaSpec, make_media
from sfuctl.rtc import rtcp
from sfuctl.rtc.rtp import build_packet, is_keyframe, read_header

FRAME = 3600  # 40 ms at 90 kHz


def feed(tracker: FrameTracker, packets: list[tuple[int, bool, float]]) -> list[bool]:
    return [tracker.on_packet(seq, marker, now) for seq, marker, now in packets]


def steady(tracker: FrameTracker, frames: int, every: float, start: float = 0.0, first_seq: int = 0) -> float:
    """`frames` one-packet frames `every` seconds apart; returns when the last one arrived."""
    feed(tracker, [(first_seq + i, True, start + i * every) for i in range(frames)])
    return start + (frames - 1) * every


# -- FrameTracker ------------------------------------------------------------------------------------
def test_in_order_frames_complete_at_their_marker() -> None:
    tracker = FrameTracker(90000)
    feed(tracker, [(s, s % 2 == 1, s * 0.02) for s in range(20)])
    assert (tracker.frames, tracker.complete_frames, tracker.lost_first, tracker.freezes) == (10, 10, 0, 0)


@pytest.mark.parametrize(
    ("fps", "gap", "freeze"),
    [
        (30, 0.120, False),  # 3.6 frame intervals: a freeze by "3 intervals", not by webrtc-stats (< mean + 150 ms)
        (30, 0.170, False),
        (30, 0.200, True),  # >= max(3 x mean, mean + 150 ms), the mean taken with this delay in it
        (5, 0.500, False),  # 2.5 intervals at 5 fps
        (5, 0.700, True),  # 3.5 intervals
    ],
)
def test_a_freeze_is_webrtc_stats_freeze_count(fps: int, gap: float, freeze: bool) -> None:
    tracker = FrameTracker(90000)
    last = steady(tracker, 30, 1 / fps)
    steady(tracker, 5, 1 / fps, start=last + gap, first_seq=30)
    assert tracker.freezes == int(freeze)
    assert tracker.freeze_seconds == (pytest.approx(gap) if freeze else 0.0)


def test_no_freeze_is_judged_before_five_delays_are_known() -> None:
    tracker = FrameTracker(90000)
    feed(tracker, [(0, True, 0.0), (1, True, 0.04), (2, True, 0.08), (3, True, 2.0)])
    assert tracker.freezes == 0


def test_a_freeze_still_open_counts_up_to_the_time_asked_and_once_when_it_closes() -> None:
    tracker = FrameTracker(90000)
    last = steady(tracker, 30, 0.04)
    assert tracker.freeze_totals(last + 0.1) == (0, 0.0)  # not (yet) a freeze
    assert tracker.freeze_totals(last + 1.0) == (1, pytest.approx(1.0))
    assert tracker.freeze_totals(last + 5.0) == (1, pytest.approx(5.0))  # the totals only grow
    steady(tracker, 3, 0.04, start=last + 6.0, first_seq=30)
    assert (tracker.freezes, tracker.freeze_seconds) == (1, pytest.approx(6.0))
    assert tracker.freeze_totals(last + 6.2) == (1, pytest.approx(6.0))


def test_a_gap_waits_for_its_retransmission_and_the_wait_counts_as_a_freeze() -> None:
    tracker = FrameTracker(90000)
    # frames of two packets every 40 ms; packet 14 (first of frame 7) is lost and comes back 400 ms later
    packets = [(s, s % 2 == 1, (s // 2) * 0.04) for s in range(24) if s != 14]
    feed(tracker, packets)
    assert tracker.lost_first == 1 and tracker.missing == 1
    assert tracker.complete_frames == 7  # frames 0-6; the rest wait behind the gap
    assert tracker.on_packet(14, False, 0.64)
    assert tracker.recovered == 1 and tracker.missing == 0
    assert tracker.complete_frames == 12
    assert tracker.freezes == 1
    assert tracker.freeze_seconds == pytest.approx(0.40)


def test_a_retransmitted_marker_completes_its_frame() -> None:
    tracker = FrameTracker(90000)
    feed(tracker, [(0, False, 0.0), (2, False, 0.04), (3, True, 0.05)])
    assert tracker.complete_frames == 0 and tracker.frames == 1
    tracker.on_packet(1, True, 0.06)
    assert tracker.frames == 2 and tracker.complete_frames == 2


def test_duplicates_are_reported_and_not_counted_twice() -> None:
    tracker = FrameTracker(90000)
    assert feed(tracker, [(10, True, 0.0), (10, True, 0.01), (9, False, 0.02)]) == [True, False, False]
    assert (tracker.packets, tracker.duplicates, tracker.frames) == (1, 2, 1)


def test_an_unrecovered_packet_is_given_up_with_its_frame() -> None:
    tracker = FrameTracker(90000, max_age=0.5)
    feed(tracker, [(0, True, 0.0), (2, False, 0.04), (3, True, 0.05), (4, True, 0.08)])
    assert tracker.expire(0.3) == 0
    assert tracker.expire(0.6) == 1
    assert (tracker.given_up, tracker.lost_frames, tracker.complete_frames, tracker.missing) == (1, 1, 2, 0)


def test_sequence_wrap_is_not_loss() -> None:
    tracker = FrameTracker(48000, detect_freezes=False)
    feed(tracker, [((65530 + i) & 0xFFFF, True, i * 0.02) for i in range(12)])
    assert (tracker.lost_first, tracker.complete_frames) == (0, 12)


def test_audio_never_counts_freezes() -> None:
    tracker = FrameTracker(48000, detect_freezes=False)
    steady(tracker, 30, 0.02)
    feed(tracker, [(30, True, 2.0)])
    assert tracker.freezes == 0 and tracker.freeze_totals(5.0) == (0, 0.0)


# -- StunRtt -----------------------------------------------------------------------------------------
def stun(kind: int, tid: bytes) -> bytes:
    return struct.pack("!HHI", kind, 0, 0x2112A442) + tid


def test_stun_rtt_pairs_requests_with_responses_and_skips_retransmitted_ones() -> None:
    rtt = StunRtt()
    rtt.on_send(stun(0x0001, b"a" * 12), 1.000)
    rtt.on_receive(stun(0x0101, b"a" * 12), 1.040)
    assert rtt.rtt_ms == pytest.approx(40.0)
    rtt.on_send(stun(0x0001, b"b" * 12), 2.000)
    rtt.on_send(stun(0x0001, b"b" * 12), 2.050)  # retransmitted: ambiguous
    rtt.on_receive(stun(0x0101, b"b" * 12), 2.060)
    rtt.on_receive(stun(0x0101, b"z" * 12), 2.070)  # unknown transaction
    rtt.on_send(stun(0x0101, b"c" * 12), 3.000)  # a response going out is not a request
    assert rtt.samples == 1
    rtt.on_send(stun(0x0001, b"d" * 12), 4.000)
    rtt.on_receive(stun(0x0101, b"d" * 12), 4.020)
    assert rtt.last_ms == pytest.approx(20.0)
    assert rtt.rtt_ms == pytest.approx(40.0 + (20.0 - 40.0) / 8)


# -- Pacer -------------------------------------------------------------------------------------------
class Ticker:
    def __init__(self, interval: float) -> None:
        self.active = True
        self.interval = interval
        self.calls = 0

    def send_frame(self, now: float) -> float:
        self.calls += 1
        return self.interval


async def test_pacer_keeps_each_stream_on_its_own_schedule_and_drops_stopped_ones() -> None:
    pacer = Pacer(asyncio.get_running_loop())
    video, audio, stopped = Ticker(0.04), Ticker(0.02), Ticker(0.01)
    for stream in (video, audio, stopped):
        pacer.add(stream)
    await asyncio.sleep(0.1)
    stopped.active = False
    calls = stopped.calls
    await asyncio.sleep(0.4)
    assert len(pacer) == 2  # the stopped stream left the heap at its next turn
    pacer.close()
    assert 11 <= video.calls <= 14 and 23 <= audio.calls <= 27
    assert 8 <= calls <= 12 and stopped.calls == calls
    assert len(pacer) == 0


# -- StreamSender / Publisher ------------------------------------------------------------------------
def vp8_track() -> EncodedTrack:
    frames = [
        EncodedFrame((bytes([0x90, 0x80, 0x80, 0x00]) + b"k" * 10, bytes([0x80, 0x80, 0x80, 0x00]) + b"k" * 5), 3000, True),
        EncodedFrame((bytes([0x90, 0x80, 0x80, 0x01]) + b"\x01" * 8,), 3000, False),
    ]
    return EncodedTrack("video", "VP8", 90000, frames, 1 / 30, 100_000)


def test_stream_sender_writes_rtp_with_continuous_numbering_picture_ids_and_markers() -> None:
    sent: list[bytes] = []
    sender = StreamSender(vp8_track(), ssrc=0xABCDEF01, payload_type=96, send_rtp=sent.append, rng=random.Random(1), nack=True)
    assert sender.send_frame(0.0) == pytest.approx(3000 / 90000)
    for _ in range(3):
        sender.send_frame(0.0)
    headers = [read_header(p) for p in sent]
    assert [h[0] for h in headers] == [0, 1, 1, 0, 1, 1]  # marker on each frame's last packet
    assert {h[1] for h in headers} == {96} and {h[4] for h in headers} == {0xABCDEF01}
    sequences = [h[2] for h in headers]
    assert all((b - a) & 0xFFFF == 1 for a, b in zip(sequences, sequences[1:]))
    timestamps = [h[3] for h in headers]
    assert [(t - timestamps[0]) & 0xFFFFFFFF for t in timestamps] == [0, 0, 3000, 6000, 6000, 9000]
    picture_ids = [struct.unpack_from("!H", p, 14)[0] & 0x7FFF for p in sent]
    assert [(p - picture_ids[0]) & 0x7FFF for p in picture_ids] == [0, 0, 1, 2, 2, 3]
    assert [p[16:] for p in sent[:3]] == [b"k" * 10, b"k" * 5, b"\x01" * 8]
    assert (sender.packets, sender.frames, sender.keyframes) == (6, 4, 2)

    sent.clear()
    sender.rtcp.on_nack([sequences[1], (sequences[0] - 5) & 0xFFFF])
    assert [read_header(p)[2] for p in sent] == [sequences[1]] and sender.retransmitted == 1


def test_publisher_answers_nack_pli_fir_and_reads_receiver_reports() -> None:
    sent: list[bytes] = []
    rtcp_out: list[bytes] = []
    sender = StreamSender(vp8_track(), ssrc=5, payload_type=96, send_rtp=sent.append, rng=random.Random(2), nack=True)
    publisher = Publisher([sender], rtcp_out.append, "bot-1")
    sender.send_frame(0.0)
    sender.send_frame(0.0)
    first_seq = read_header(sent[0])[2]
    sent.clear()
    block = rtcp.ReportBlock(5, 64, 3, 10, 900, 0, 0)
    publisher.router.route(
        bytes(rtcp.ReceiverReport(99, [block])) + bytes(rtcp.Nack(99, 5, [first_seq])) + bytes(rtcp.Pli(99, 5))
        + bytes(rtcp.Fir(99, [(5, 1)]))
    )
    assert [read_header(p)[2] for p in sent] == [first_seq]
    assert (sender.nacks, sender.plis, sender.firs) == (1, 1, 1)
    assert sender.fraction_lost == 0.25 and sender.packets_lost == 3 and sender.jitter_ms == pytest.approx(10.0)
    sender.send_frame(0.0)
    assert read_header(sent[-1])[0] == 1 and sent[-1][16:] == b"k" * 5  # jumped to the keyframe
    publisher.send_reports(1.0)
    sr, sdes = rtcp.parse_compound(rtcp_out[-1])
    assert isinstance(sr, rtcp.SenderReport) and sr.ssrc == 5 and sr.packet_count == sender.packets
    assert isinstance(sdes, rtcp.Sdes) and sdes.chunks == [(5, "bot-1")]
    publisher.router.route(b"\x80")
    assert publisher.invalid_rtcp == 1


# -- ConsumerStream / Subscriber ---------------------------------------------------------------------
def consumer(kind: str = "video", nack: bool = True) -> ConsumerStream:
    info = ConsumerInfo("c-1", "p-1", "peer-1", "bot-1", kind, "VP8" if kind == "video" else "opus", "0", 77,
                        90000 if kind == "video" else 48000, nack)
    return ConsumerStream(info, announced_at=10.0)


def video_packet(seq: int, frame: int, marker: bool, key: bool = False) -> bytes:
    payload = bytes([0x90, 0x80, 0x80, frame & 0xFF, 0x00 if key else 0x01]) + bytes(50)
    return build_packet(96, seq, frame * FRAME, 77, payload, marker=marker)


def test_subscriber_counts_keyframes_first_frame_and_asks_for_lost_packets() -> None:
    rtcp_out: list[bytes] = []
    clock = iter([10.2 + i * 0.01 for i in range(100)])
    subscriber = Subscriber(rtcp_out.append, "bot-2", 4242, lambda: next(clock))
    stream = consumer()
    subscriber.add(stream)
    for seq in (0, 1, 3, 4, 5):
        subscriber.on_rtp(video_packet(seq, seq // 2, seq % 2 == 1, key=seq == 0))
    subscriber.on_rtp(build_packet(96, 1, 0, 999, b"x"))
    subscriber.on_rtp(b"\x80\x60")
    assert (subscriber.unknown_packets, subscriber.invalid_packets) == (1, 1)
    assert stream.keyframes == 1
    assert stream.stats(11.0, 3.0)["first_frame_ms"] == pytest.approx(200.0)
    subscriber.tick(10.3)
    nack = rtcp.parse_compound(rtcp_out[-1])[0]
    assert isinstance(nack, rtcp.Nack) and nack.media_ssrc == 77 and nack.sender_ssrc == 4242 and nack.lost == [2]
    subscriber.router.route(bytes(rtcp.SenderReport(77, rtcp.ntp_from_unix(1000.0), 0, 5, 100)))
    subscriber.send_report(10.5)
    rr, sdes = rtcp.parse_compound(rtcp_out[-1])
    assert isinstance(rr, rtcp.ReceiverReport) and rr.reports[0].ssrc == 77
    assert rr.reports[0].lsr == rtcp.ntp_middle(rtcp.ntp_from_unix(1000.0)) and rr.reports[0].packets_lost == 1
    assert sdes.cname == "bot-2"
    stats = stream.stats(11.0, 3.0)
    assert (stats["packets"], stats["expected"], stats["lost_before_recovery"], stats["rtt_ms"]) == (5, 6, 1, 3.0)
    assert stats["nacks_sent"] == 1 and stats["nacked_packets"] == 1


def test_a_given_up_frame_or_a_missing_keyframe_sends_a_rate_limited_pli() -> None:
    stream = consumer()
    stream.receive(video_packet(0, 0, False), 0.0)  # no keyframe yet
    assert stream.feedback(0.5, 1) == []
    pli = stream.feedback(1.1, 1)
    assert [type(p) for p in rtcp.parse_compound(b"".join(pli))] == [rtcp.Pli]
    assert stream.feedback(1.5, 1) == []  # at most one PLI per second
    assert stream.plis_sent == 1


def test_audio_without_nack_gives_missing_packets_up_quickly() -> None:
    stream = consumer("audio", nack=False)
    for seq in (0, 1, 3):
        stream.receive(build_packet(111, seq, seq * 960, 77, b"o" * 20), seq * 0.02)
    assert stream.feedback(0.3, 1) == []
    stats = stream.stats(1.0, None)
    assert (stats["packets_lost"], stats["lost_before_recovery"], stats["freezes"]) == (1, 1, 0)
    assert stats["first_frame_ms"] == pytest.approx(-10_000.0)  # announced at 10.0 on another clock


# -- planning and aggregation ------------------------------------------------------------------------
def test_plan_spreads_bots_over_rooms_during_the_ramp_and_picks_publishers_per_room() -> None:
    plans = plan_bots(BotsConfig(url="ws://x", count=7, rooms=3, publishers=2, ramp=2))
    assert [p.room for p in plans] == ["room-1", "room-2", "room-3"] * 2 + ["room-1"]
    assert [p.publish for p in plans] == [True] * 6 + [False]
    assert [p.start_offset for p in plans] == [i / 2 for i in range(7)]
    single = plan_bots(BotsConfig(url="ws://x", count=2, room="demo"))
    assert [p.room for p in single] == ["demo", "demo"] and all(p.publish for p in single)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "http://x"}, "url must start with ws:// or wss://, not 'http://x'"),
        ({"count": 0}, "count must be between 1 and 10000, not 0"),
        ({"count": 2, "rooms": 3}, "rooms must be between 1 and the bot count (2), not 3"),
        ({"ramp": 0}, "ramp must be more than 0 and at most 1000 joins per second, not 0"),
        ({"audio": False, "video": False}, "bots need audio or video (both --no-audio and --no-video were given)"),
    ],
)
def test_config_rejects_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        BotsConfig(**{"url": "ws://127.0.0.1:1", **kwargs})
    assert str(error.value) == message


def test_config_survives_the_trip_to_a_child_process() -> None:
    config = BotsConfig(url="ws://h:1", count=4, impairment=ImpairmentConfig(loss=0.1, delay_ms=5), impaired=(1, 2))
    assert BotsConfig.from_dict(config.to_dict()) == config


def test_counters_merge_across_processes_into_one_sample() -> None:
    a = RoomCounters(bots=2, joined=2, active=2, received_bps=1e6, expected=100, lost=2, lost_first=5,
                     jitter_sum=2.0, jitter_count=2, jitter_max=1.5, rtt_sum=4.0, rtt_count=2)
    b = RoomCounters(bots=1, failed=1, received_bps=5e5, expected=100, lost=0, lost_first=3,
                     jitter_sum=3.0, jitter_count=1, jitter_max=3.0)
    merged = merge_counters([{"room-1": a}, {"room-1": b, "room-2": RoomCounters(bots=1)}])
    sample = Sample.from_counters(5.0, merged)
    room = sample.rooms["room-1"]
    assert (room.bots, room.joined, room.failed, room.received_bitrate_bps) == (3, 2, 1, 1.5e6)
    assert room.loss == pytest.approx(0.01) and room.loss_before_recovery == pytest.approx(0.04)
    assert room.jitter_ms == pytest.approx(5 / 3) and room.jitter_max_ms == 3.0 and room.rtt_ms == 2.0
    assert sample.total.bots == 4 and list(sample.rooms) == ["room-1", "room-2"]
    assert sample.worst_loss() == ("room-1", pytest.approx(0.01))
    assert RoomCounters.from_dict(a.to_dict()) == a


@pytest.mark.parametrize(
    ("values", "fraction", "expected"),
    [([], 0.5, None), ([3.0], 0.95, 3.0), ([1, 2, 3, 4], 0.5, 2), ([1, 2, 3, 4], 0.95, 4), (list(range(1, 101)), 0.95, 95)],
)
def test_percentile_is_nearest_rank(values: list, fraction: float, expected: float | None) -> None:
    assert percentile(values, fraction) == expected


def test_summary_pools_loss_and_counts_failures() -> None:
    def bot(status: str, consumers: list[dict], join_ms: float | None) -> dict:
        return {"room": "r", "status": status, "joined": status != "failed", "join_ms": join_ms, "recv_rtt_ms": 2.0,
                "sent": [{"bitrate_bps": 100, "packets": 10, "bytes": 100}], "consumers": consumers}

    def stream(expected: int, lost: int, first: int) -> dict:
        return {"kind": "video", "packets": expected - lost, "expected": expected, "packets_lost": lost,
                "lost_before_recovery": first, "jitter_ms": 1.0, "bitrate_bps": 1000, "bytes": 1000, "freezes": 1,
                "freeze_ms": 200.0, "first_frame_ms": 50.0}

    peaks = BitratePeaks()
    peaks.sent["r"], peaks.received["r"] = 150.0, 1500.0
    row = summarize("r", [bot("left", [stream(100, 1, 5), stream(300, 0, 15)], 20.0), bot("failed", [], None)], 8.0, peaks)
    assert (row["bots"], row["joined"], row["failed"], row["streams_received"]) == (2, 1, 1, 2)
    assert row["fraction_lost"] == pytest.approx(1 / 400) and row["fraction_lost_before_recovery"] == pytest.approx(0.05)
    assert (row["freezes"], row["join_p50_ms"]) == (2, 20.0)
    # bytes over the run, never a sum of each stream's own bitrate; the peak is what was seen in one interval
    assert (row["sent_mean_bps"], row["received_mean_bps"]) == (200 * 8 / 8.0, 2000 * 8 / 8.0)
    assert (row["sent_peak_bps"], row["received_peak_bps"]) == (150.0, 1500.0)
    assert (row["sent_bitrate_bps"], row["received_bitrate_bps"]) == (row["sent_mean_bps"], row["received_mean_bps"])


# -- decoding (--decode) -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("payload", "data"),
    [
        (bytes([0x10]) + b"abc", b"abc"),  # no extension
        (bytes([0x90, 0x80, 0x85, 0x01]) + b"abc", b"abc"),  # 15-bit picture id
        (bytes([0x90, 0x80, 0x05]) + b"abc", b"abc"),  # 7-bit picture id
        (bytes([0x90, 0xE0, 0x05, 0x07, 0x20]) + b"abc", b"abc"),  # picture id, TL0PICIDX, TID
    ],
)
def test_vp8_data_strips_the_payload_descriptor(payload: bytes, data: bytes) -> None:
    assert vp8_data(payload) == data


@pytest.mark.parametrize(("payload", "message"), [(b"", "empty VP8 payload"), (b"\x90", "VP8 payload descriptor truncated")])
def test_vp8_data_rejects_truncated_payloads(payload: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        vp8_data(payload)


def test_h264_annex_b_rebuilds_single_stap_a_and_fu_a_units() -> None:
    sps, pps = b"\x67\x42\x00\x1f", b"\x68\xce"
    assert h264_annex_b(b"\x41\x9a") == b"\x00\x00\x00\x01\x41\x9a"
    stap = b"\x78" + len(sps).to_bytes(2, "big") + sps + len(pps).to_bytes(2, "big") + pps
    assert h264_annex_b(stap) == b"\x00\x00\x00\x01" + sps + b"\x00\x00\x00\x01" + pps
    assert h264_annex_b(b"\x7c\x85" + b"idr") == b"\x00\x00\x00\x01\x65idr"  # FU-A start of an IDR
    assert h264_annex_b(b"\x7c\x45" + b"end") == b"end"
    with pytest.raises(ValueError, match="^H.264 STAP-A unit exceeds the payload$"):
        h264_annex_b(b"\x78\x00\x09\x67")


def test_frame_decoder_starts_at_a_keyframe_and_decodes_frames_in_sequence_order(tmp_path) -> None:
    files = make_media(MediaSpec(width=160, height=96, duration=0.4, keyframe_interval=0.2), tmp_path)
    track = load_track(files.video, "video")
    assert [f.keyframe for f in track.frames] == [True, False, False, False, False] * 2
    frames, sequence = [], 100
    for frame in track.frames:
        frames.append([(sequence + i, i == len(frame.payloads) - 1, p) for i, p in enumerate(frame.payloads)])
        sequence += len(frame.payloads)
    decoder = FrameDecoder("VP8")
    for packet in [p for frame in frames[1:5] for p in frame]:
        decoder.on_packet(*packet)  # joined mid-GOP: nothing decodes before a keyframe
    assert decoder.decoded == 0
    late = frames[6][0]
    for packet in [p for frame in frames[5:] for p in frame if p is not late]:
        decoder.on_packet(*packet)
    assert decoder.decoded == 1  # frame 5; frames 7-9 are complete but wait behind frame 6
    decoder.on_packet(*late)
    assert (decoder.decoded, decoder.errors, decoder.size) == (5, 0, (160, 96))


def test_frame_decoder_starts_an_h264_keyframe_at_its_parameter_sets_even_when_they_come_late(tmp_path) -> None:
    files = make_media(MediaSpec(width=160, height=96, duration=0.2, video_codec="h264"), tmp_path)
    track = load_track(files.video, "video")
    packets, sequence = [], 7
    for frame in track.frames:
        packets += [(sequence + i, i == len(frame.payloads) - 1, p) for i, p in enumerate(frame.payloads)]
        sequence += len(frame.payloads)
    first, idr = packets[0], packets[1]
    assert starts_keyframe("H264", first[2]) and not starts_keyframe("H264", idr[2])
    assert is_keyframe("H264", idr[2])  # an IDR slice, but it cannot decode before the SPS and PPS
    decoder = FrameDecoder("H264")
    for packet in packets[1:] + [first]:  # the first packet lost, then retransmitted after the others
        decoder.on_packet(*packet)
    assert (decoder.decoded, decoder.errors, decoder.size) == (len(track.frames), 0, (160, 96))
