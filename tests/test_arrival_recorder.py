from sfuctl.rtc.arrival_recorder import FEEDBACK_INTERVAL, STATUSES_PER_PACKET, STATUSES_PER_ROUND, ArrivalRecorder
from sfuctl.rtc.transport_feedback import TICKS_PER_SECOND, TransportFeedback


def parsed(packets: list[bytes]) -> list[TransportFeedback]:
    return [TransportFeedback.parse(p) for p in packets]


def reported(packets: list[bytes]) -> list[tuple[int, float]]:
    """(sequence, arrival seconds relative to the first reported arrival) of every received entry."""
    entries = [entry for feedback in parsed(packets) for entry in feedback.received()]
    first = entries[0][1]
    return [(sequence, (ticks - first) / TICKS_PER_SECOND) for sequence, ticks in entries]


def test_in_order_packets_are_reported_once_per_interval_with_their_arrival_times() -> None:
    recorder = ArrivalRecorder(sender_ssrc=7, media_ssrc=9)
    for index in range(5):
        recorder.record(100 + index, 10.0 + index * 0.002)
    (feedback,) = parsed(recorder.feedback(10.01))
    assert (feedback.sender_ssrc, feedback.media_ssrc, feedback.base_sequence, feedback.feedback_count) == (7, 9, 100, 0)
    assert reported([bytes(feedback)]) == [(100 + i, i * 0.002) for i in range(5)]
    recorder.record(105, 10.02)
    assert recorder.feedback(10.01 + FEEDBACK_INTERVAL / 2) == []  # not due yet
    (second,) = parsed(recorder.feedback(10.01 + FEEDBACK_INTERVAL))
    assert (second.base_sequence, second.feedback_count, len(second.arrivals)) == (105, 1, 1)
    assert recorder.feedback(11.0) == []  # nothing new arrived
    assert (recorder.packets, recorder.feedback_packets) == (6, 2)


def test_losses_are_reported_as_not_received() -> None:
    recorder = ArrivalRecorder(1)
    for sequence in (1, 2, 5, 6):
        recorder.record(sequence, 1.0 + sequence / 1000)
    (feedback,) = parsed(recorder.feedback(2.0))
    assert [a is not None for a in feedback.arrivals] == [True, True, False, False, True, True]


def test_sequences_wrap_around_within_one_report() -> None:
    recorder = ArrivalRecorder(1)
    for index, sequence in enumerate((65534, 65535, 0, 1)):
        recorder.record(sequence, 1.0 + index * 0.001)
    (feedback,) = parsed(recorder.feedback(2.0))
    assert feedback.base_sequence == 65534
    assert [s for s, _ in feedback.received()] == [65534, 65535, 0, 1]


def test_reordering_is_reported_with_the_real_arrival_order() -> None:
    recorder = ArrivalRecorder(1)
    recorder.record(1, 1.000)
    recorder.record(3, 1.001)
    recorder.record(2, 1.005)  # overtaken by 3
    assert reported(recorder.feedback(2.0)) == [(1, 0.0), (2, 0.005), (3, 0.001)]


def test_a_packet_arriving_after_it_was_reported_lost_is_reported_again_with_what_followed() -> None:
    recorder = ArrivalRecorder(1)
    recorder.record(1, 1.00)
    recorder.record(3, 1.01)
    (first,) = parsed(recorder.feedback(1.02))
    assert first.arrivals[1] is None
    recorder.record(2, 1.03)
    recorder.record(4, 1.04)
    (second,) = parsed(recorder.feedback(1.2))
    assert second.base_sequence == 2 and all(a is not None for a in second.arrivals) and len(second.arrivals) == 3
    recorder.record(2, 1.05)  # a duplicate
    recorder.record(0, 1.06)  # older than anything kept
    assert recorder.late == 2


def test_packets_too_late_for_the_history_are_not_reported() -> None:
    recorder = ArrivalRecorder(1)
    recorder.record(1, 1.0)
    recorder.record(3, 1.0)
    recorder.feedback(1.0)
    recorder.record(4, 2.0)
    recorder.feedback(2.0)  # 1..3 are now older than the history
    recorder.record(2, 2.05)
    assert recorder.late == 1 and recorder.feedback(3.0) == []


def test_a_long_report_is_split_into_packets_and_a_gap_over_16_bits_of_delta_starts_a_new_one() -> None:
    recorder = ArrivalRecorder(1)
    for sequence in range(1000):
        recorder.record(sequence, 1.0 + sequence * 0.0001)
    packets = parsed(recorder.feedback(2.0))
    assert [len(p.arrivals) for p in packets] == [STATUSES_PER_PACKET, STATUSES_PER_PACKET, 200]
    assert [p.feedback_count for p in packets] == [0, 1, 2]
    assert all(len(bytes(p)) < 1200 for p in packets)
    recorder.record(1000, 3.0)
    recorder.record(1001, 12.0)  # 9 s later: more than a signed 16-bit delta of 250 µs ticks
    packets = parsed(recorder.feedback(12.0))
    assert [(p.base_sequence, len(p.arrivals)) for p in packets] == [(1000, 1), (1001, 1)]
    assert reported([bytes(p) for p in packets]) == [(1000, 0.0), (1001, 9.0)]


def test_a_jump_far_ahead_costs_at_most_one_bounded_round() -> None:
    recorder = ArrivalRecorder(1)
    recorder.record(0, 1.0)
    recorder.record(30000, 1.0)
    packets = parsed(recorder.feedback(1.0))
    assert sum(len(p.arrivals) for p in packets) == STATUSES_PER_ROUND
    assert packets[-1].arrivals[-1] is not None
