import tracemalloc

import pytest

from sfuctl.rtc.nack import NackGenerator, RetransmissionBuffer
from sfuctl.rtc.rtcp import Nack


def fed(sequences, now: float = 0.0, **options) -> NackGenerator:
    generator = NackGenerator(**options)
    for sequence in sequences:
        generator.on_packet(sequence, now)
    return generator


def test_in_order_stream_has_nothing_to_nack():
    generator = fed(range(100))
    assert generator.missing == 0
    assert generator.due(0.0) == []


def test_gap_is_nacked_then_retried_after_the_interval():
    generator = fed([1, 2, 5])
    assert generator.missing == 2
    assert generator.due(0.0) == [3, 4]
    assert generator.due(0.049) == []
    assert generator.due(0.05) == [3, 4]
    generator.on_packet(3, 0.06)  # the retransmission arrives
    assert generator.missing == 1
    assert generator.due(0.1) == [4]
    assert generator.due(0.12) == []


def test_gap_across_the_wrap_in_sequence_order():
    generator = fed([65533, 1])
    assert generator.due(0.0) == [65534, 65535, 0]
    # the list packs into one PID+BLP pair
    assert Nack.parse(bytes(Nack(1, 2, generator.due(1.0)))).lost == [65534, 65535, 0]


def test_reordered_packet_is_not_nacked_again():
    generator = fed([10, 12])
    generator.on_packet(11, 0.001)
    assert generator.missing == 0
    assert generator.due(0.01) == []


def test_duplicates_and_old_packets_change_nothing():
    generator = fed([10, 11, 13, 13, 11, 9])
    assert generator.missing == 1
    assert generator.due(0.0) == [12]


def test_entries_expire_after_max_age():
    generator = fed([1, 4], max_age=0.5)
    assert generator.due(0.0) == [2, 3]
    generator.on_packet(5, 0.3)
    generator.on_packet(8, 0.3)  # a later gap: 6, 7
    assert generator.due(0.3) == [2, 3, 6, 7]
    assert generator.due(0.51) == [6, 7]  # 2 and 3 are older than 0.5 s
    assert generator.missing == 2
    assert generator.due(0.81) == []
    assert generator.missing == 0


def test_entries_are_dropped_after_max_retries():
    generator = fed([1, 3], max_retries=3, retry_interval=0.1)
    assert [generator.due(t / 10) for t in range(6)] == [[2], [2], [2], [], [], []]
    assert generator.missing == 0


def test_entries_are_nacked_at_most_once_per_interval():
    generator = fed([1, 3], retry_interval=0.05)
    sent_at = [i / 1000 for i in range(300) if generator.due(i / 1000)]
    gaps = [b - a for a, b in zip(sent_at, sent_at[1:])]
    assert sent_at[0] == 0.0 and len(sent_at) == 6
    assert all(0.05 - 1e-9 < gap <= 0.051 + 1e-9 for gap in gaps), gaps


def test_huge_forward_jump_resets_instead_of_tracking():
    generator = fed([1, 30000])
    assert generator.missing == 0
    generator.on_packet(30001, 0.0)
    generator.on_packet(30003, 0.0)
    assert generator.due(0.0) == [30002]


def test_gap_at_the_cap_is_tracked_and_one_more_resets():
    assert fed([0, 513]).missing == 512
    assert fed([0, 514]).missing == 0


def test_tracked_set_is_capped_dropping_the_oldest():
    generator = NackGenerator(max_missing=512)
    for sequence in range(0, 1000, 100):  # nine gaps of 99 packets: 891 missing, 512 kept
        generator.on_packet(sequence, 0.0)
    holes = [s for s in range(900) if s % 100]
    assert generator.missing == 512
    assert generator.due(0.0) == holes[-512:]


def test_stray_packet_far_behind_does_not_reset():
    generator = fed([1000, 1002])
    generator.on_packet(100, 0.0)  # a stale retransmission long given up
    assert generator.missing == 1
    generator.on_packet(1003, 0.0)
    assert generator.due(0.0) == [1001]


def test_late_retransmission_far_behind_still_clears_its_entry():
    generator = fed([0, 2])
    for sequence in range(3, 1000):
        generator.on_packet(sequence, 0.0)
    generator.on_packet(1, 0.2)
    assert generator.missing == 0


def test_two_sequential_packets_far_behind_are_a_restart():
    generator = fed([1000, 1002])
    generator.on_packet(100, 0.0)
    generator.on_packet(101, 0.0)
    assert generator.missing == 0
    generator.on_packet(103, 0.0)
    assert generator.due(0.0) == [102]


def test_retransmission_buffer_round_trip_and_overwrite():
    buffer = RetransmissionBuffer(size=8)
    assert buffer.get(3) is None
    for sequence in range(65530, 65536):
        buffer.store(sequence, b"p%d" % sequence)
    buffer.store(0, b"zero")
    assert buffer.get(65535) == b"p65535"
    assert buffer.get(0) == b"zero"
    buffer.store(2, b"two")  # 65530 & 7 == 2: evicts 65530
    assert buffer.get(65530) is None
    assert buffer.get(2) == b"two"
    assert buffer.get(10) is None  # same slot, different sequence
    buffer.clear()
    assert [buffer.get(s) for s in (0, 2, 65535)] == [None, None, None]


@pytest.mark.parametrize("size", [0, 3, 1000, -8])
def test_retransmission_buffer_size_must_be_a_power_of_two(size):
    with pytest.raises(ValueError, match=f"^retransmission buffer size {size} is not a power of two$"):
        RetransmissionBuffer(size)


def test_retransmission_buffer_memory_is_flat_after_the_first_lap():
    buffer = RetransmissionBuffer(size=1024)
    packet = bytes(1200)
    tracemalloc.start()
    try:
        for sequence in range(2048):
            buffer.store(sequence, packet)
        before = tracemalloc.get_traced_memory()[0]
        for sequence in range(2048, 65536):
            buffer.store(sequence, packet)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after - before < 1024
