import pytest

from sfuctl.rtc.send_history import FIRST_RING_SIZE, MAX_FEEDBACK_AGE, RING_SIZE, ROOM_CHECK, PacketResult, SendHistory
from sfuctl.rtc.transport_feedback import TICKS_PER_SECOND, TransportFeedback


def test_sequences_count_up_and_wrap() -> None:
    history = SendHistory()
    history.sequence = 65534
    assert [history.add(100, 1.0) for _ in range(3)] == [65534, 65535, 0]
    assert len(history.sent) == FIRST_RING_SIZE and history.sent[(65534 & history.mask)] == 1.0


def test_feedback_is_matched_to_send_times_and_sizes_once() -> None:
    history = SendHistory()
    for index in range(4):
        history.add(1000 + index, 1.0 + index * 0.01)
    # 0 at reference + 8 ticks (2 ms), 1 lost, 2 at +4 ms, 3 at +6 ms; reference time 10 (0.64 s)
    feedback = TransportFeedback(1, 2, 0, 10, 0, [2568, None, 2576, 2584])
    assert history.on_feedback(feedback, 1.1) == [
        PacketResult(1.0, 0.642, 1000, -1),
        PacketResult(1.01, None, 1001, -1),
        PacketResult(1.02, 0.644, 1002, -1),
        PacketResult(1.03, 0.646, 1003, -1),
    ]
    late = TransportFeedback(1, 2, 1, 10, 1, [2590, 2576, None])  # 1 arrived after all; 2 again; 3 lost again
    assert history.on_feedback(late, 1.2) == [PacketResult(1.01, 0.6475, 1001, -1)]


def test_reference_time_wraps_without_breaking_the_arrival_timeline() -> None:
    history = SendHistory()
    history.add(100, 1.0)
    history.add(100, 1.1)
    top = (1 << 24) - 1
    first = history.on_feedback(TransportFeedback(1, 2, 0, top, 0, [top * 256]), 1.2)
    second = history.on_feedback(TransportFeedback(1, 2, 1, 1, 1, [256]), 1.3)
    assert second[0].arrival - first[0].arrival == pytest.approx(0.128)  # two reference steps of 64 ms


def test_feedback_about_packets_never_sent_or_too_old_is_counted_and_ignored() -> None:
    history = SendHistory()
    history.add(100, 1.0)
    assert history.on_feedback(TransportFeedback(1, 2, 5, 0, 0, [1, 2]), 1.1) == []
    assert history.on_feedback(TransportFeedback(1, 2, 0, 0, 0, [1]), 100.0) == []
    assert history.unknown == 3
    for _ in range(RING_SIZE + 10):
        history.add(100, 200.0)
    # A report of all 65535 sequences costs no more than the ring: only the last RING_SIZE packets are looked at
    everything = history.on_feedback(TransportFeedback(1, 2, 0, 0, 1, [5] * 0xFFFF), 200.5)
    assert len(everything) == RING_SIZE and history.unknown == 3 + 0xFFFF - RING_SIZE


def test_probe_packets_carry_their_cluster_until_the_slot_is_reused() -> None:
    history = SendHistory()
    history.add_probe(280, 1.0, cluster=3)
    history.add(1200, 1.0)
    results = history.on_feedback(TransportFeedback(1, 2, 0, 0, 0, [1, 2]), 1.1)
    assert [r.cluster for r in results] == [3, -1]
    history.sequence = RING_SIZE
    history.add(1200, 2.0)  # the same slot, a later lap: no longer a probe
    assert history.on_feedback(TransportFeedback(1, 2, RING_SIZE, 0, 1, [300]), 2.1)[0].cluster == -1


def test_the_ring_grows_to_hold_the_packets_of_the_feedback_window_and_no_more() -> None:
    history = SendHistory()
    for index in range(10 * FIRST_RING_SIZE):  # 10 laps of the first ring at 40 packets a second: no growth
        history.add(200, index / 40)
    assert len(history.sent) == FIRST_RING_SIZE
    start = 10 * FIRST_RING_SIZE / 40
    for index in range(3000):  # 400 packets a second: 2 s of them (and a run of ROOM_CHECK) fit in 1024 slots
        history.add(1000, start + index / 400)
    assert len(history.sent) == len(history.sizes) == 1024 and history.mask == 1023
    assert history.sent[history.sequence - 1 & history.mask] == start + 2999 / 400
    for index in range(20000):  # 5000 packets a second: the ring stops at RING_SIZE
        history.add(1000, start + 10 + index / 5000)
    assert len(history.sent) == RING_SIZE


@pytest.mark.parametrize("first", [0, 65535 - 200, 65535 - FIRST_RING_SIZE, 65535 - 3 * ROOM_CHECK + 5])
def test_feedback_is_matched_across_growth_and_sequence_wrap(first: int) -> None:
    history = SendHistory()
    history.sequence = first
    sent = [history.add(500 + index, 1.0 + index * 0.001) for index in range(600)]  # grows 128 -> 256 -> 512 -> 1024
    assert len(history.sent) == 1024
    for index, sequence in enumerate(sent[:2]):  # the oldest survive the moves with their own time and size
        results = history.on_feedback(TransportFeedback(1, 2, sequence, 0, index, [100]), 1.7)
        assert results == [PacketResult(1.0 + index * 0.001, 100 / TICKS_PER_SECOND, 500 + index, -1)]
    results = history.on_feedback(TransportFeedback(1, 2, sent[0], 0, 2, [100] * 600), 1.7)
    assert [r.size for r in results] == list(range(502, 1100)) and history.unknown == 0


def test_packets_older_than_the_feedback_window_are_overwritten_not_grown_for() -> None:
    history = SendHistory()
    for _ in range(FIRST_RING_SIZE):
        history.add(100, 1.0)
    for _ in range(FIRST_RING_SIZE):
        history.add(100, 1.0 + MAX_FEEDBACK_AGE + 0.5)
    assert len(history.sent) == FIRST_RING_SIZE
    assert history.on_feedback(TransportFeedback(1, 2, 0, 0, 0, [1]), 3.6) == [] and history.unknown == 1
