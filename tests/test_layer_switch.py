"""LayerSwitch: one outgoing numbering over several encodings, driven with synthetic packets."""

from __future__ import annotations

import pytest

from sfuctl.rtc.layer_switch import HISTORY, LayerSwitch
from sfuctl.rtc.vp8 import parse_descriptor

CLOCK = 90000
FRAME = 3600  # 25 fps


def vp8(picture_id: int, keyframe: bool = False, tid: int | None = None, tl0: int = 0):
    ext = 0x80 | (0x40 | 0x20 if tid is not None else 0)
    body = bytes((0x90, ext, 0x80 | picture_id >> 8, picture_id & 0xFF))
    if tid is not None:
        body += bytes((tl0, tid << 6))
    return parse_descriptor(body + (b"\x10" if keyframe else b"\x11") + b"rest")


def make(reports=None, target=0) -> LayerSwitch:
    switch = LayerSwitch(CLOCK, lambda layer: (reports or {}).get(layer), target=target)
    switch.last_seq, switch.last_ts = 999, 50_000
    return switch


def out(switch, layer, seq, ts, keyframe=False, now=0.0, desc=None):
    epoch = switch.accept(layer, seq, ts, keyframe, desc, now)
    if epoch is None:
        return None
    return ((seq + epoch.seq_offset) & 0xFFFF, (ts + epoch.ts_offset) & 0xFFFFFFFF)


def test_waits_for_a_keyframe_of_the_target_then_continues_the_numbering() -> None:
    s = make(target=1)
    assert out(s, 1, 500, 7000) is None  # not a keyframe
    assert out(s, 0, 800, 9000, keyframe=True) is None  # not the target
    assert out(s, 1, 501, 7000, keyframe=True, now=1.0) == (1000, 50_000)
    assert out(s, 1, 502, 7000, now=1.0) == (1001, 50_000)
    assert out(s, 1, 503, 7000 + FRAME, now=1.04) == (1002, 50_000 + FRAME)
    assert s.current == 1 and s.switches == 0 and not s.switching


@pytest.mark.parametrize(
    ("reports", "expected_ts"),
    [
        # No SR: the wall clock places the new encoding's keyframe (0.09 s after the last packet sent).
        ({}, 50_000 + FRAME + 8100),
        # SRs: layer 0's RTP 1000 and layer 1's RTP 7_000_000 are the same instant (NTP 100.0); layer 1's
        # keyframe 7_000_000 + 2 * FRAME is then 2 frames after layer 0's 1000, i.e. its timestamp 1000 + 2 * FRAME.
        ({0: (100.0, 1000), 1: (100.0, 7_000_000)}, 50_000 + 2 * FRAME),
        # The same with the layers' SRs taken at different instants.
        ({0: (100.0, 1000), 1: (101.0, 7_000_000 + CLOCK)}, 50_000 + 2 * FRAME),
        # An SR pair that would send the time line backwards: the wall clock wins.
        ({0: (100.0, 1000), 1: (90.0, 7_000_000 + 2 * FRAME)}, 50_000 + FRAME + 8100),
    ],
)
def test_a_switch_places_timestamps_on_the_old_time_line(reports, expected_ts) -> None:
    s = make(reports)
    assert out(s, 0, 10, 1000, keyframe=True, now=0.0) == (1000, 50_000)
    assert out(s, 0, 11, 1000 + FRAME, now=0.04) == (1001, 50_000 + FRAME)
    s.target = 1
    assert s.switching
    assert out(s, 1, 400, 7_000_000 + FRAME, now=0.05) is None  # waiting for layer 1's keyframe
    # The old encoding flows on until the switch.
    assert out(s, 0, 12, 1000 + FRAME, now=0.05) == (1002, 50_000 + FRAME)
    assert out(s, 1, 401, 7_000_000 + 2 * FRAME, keyframe=True, now=0.14) == (1003, expected_ts)
    assert out(s, 1, 402, 7_000_000 + 2 * FRAME, now=0.14) == (1004, expected_ts)
    assert out(s, 0, 13, 1000 + 2 * FRAME, now=0.15) is None  # the old encoding is dropped after it
    assert (s.current, s.switches) == (1, 1)


def test_sequence_numbers_wrap_and_reordered_packets_keep_their_place() -> None:
    s = make()
    s.last_seq = 0xFFFE
    assert out(s, 0, 100, 0, keyframe=True) == (0xFFFF, 50_000)
    assert out(s, 0, 102, 0) == (1, 50_000)
    assert out(s, 0, 101, 0) == (0, 50_000)  # late: mapped with the same offset, not counted as newest
    assert s.last_seq == 1


def test_nack_maps_back_to_the_encoding_and_number_sent() -> None:
    s = make(target=2)
    out(s, 2, 5000, 0, keyframe=True)
    out(s, 2, 5001, 0)
    s.target = 0
    out(s, 0, 70, 0, keyframe=True, now=0.5)
    for out_seq, (layer, source) in {1000: (2, 5000), 1001: (2, 5001), 1002: (0, 70)}.items():
        epoch = s.lookup(out_seq)
        assert (epoch.layer, epoch.source_seq(out_seq)) == (layer, source)
    assert s.lookup(1003) is None
    for seq in range(71, 71 + HISTORY):
        out(s, 0, seq, 0)
    assert s.lookup(1002).source_seq(1002 + HISTORY) == 70 + HISTORY  # the slot was reused


def test_upper_temporal_layers_are_dropped_without_a_gap() -> None:
    s = make()
    s.max_temporal = 0
    packets = [(10, vp8(1, keyframe=True, tid=0)), (11, vp8(2, tid=2)), (12, vp8(3, tid=1)), (13, vp8(4, tid=0))]
    sent = [out(s, 0, seq, 0, keyframe=d.keyframe, desc=d) for seq, d in packets]
    assert sent == [(1000, 50_000), None, None, (1001, 50_000)]
    assert s.lookup(1001).source_seq(1001) == 13
    s.max_temporal = None
    assert out(s, 0, 14, 0, desc=vp8(5, tid=2)) == (1002, 50_000)


def test_vp8_picture_ids_continue_across_a_switch() -> None:
    s = make(target=1)
    out(s, 1, 1, 0, keyframe=True, desc=vp8(900, keyframe=True, tid=0, tl0=50))
    out(s, 1, 2, FRAME, desc=vp8(901, tid=0, tl0=51))
    assert (s.epoch.pid_offset, s.epoch.tl0_offset) == (0, 0)
    s.target = 0
    out(s, 0, 7, 0, keyframe=True, desc=vp8(20, keyframe=True, tid=0, tl0=3), now=0.1)
    assert ((20 + s.epoch.pid_offset) & 0x7FFF, (3 + s.epoch.tl0_offset) & 0xFF) == (902, 52)


def test_restart_waits_for_the_next_keyframe_and_continues() -> None:
    s = make()
    out(s, 0, 10, 0, keyframe=True)
    s.restart()
    assert s.switching
    assert out(s, 0, 11, FRAME, now=0.04) is None
    assert out(s, 0, 30, 20 * FRAME, keyframe=True, now=1.0) == (1001, 50_000 + CLOCK)
