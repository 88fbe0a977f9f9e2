import pytest

from sfuctl.rtc.reception import ReceptionStats
from sfuctl.rtc.rtcp import ReportBlock, ntp_middle, rtt_ms

CLOCK = 90000
FRAME = 0.02  # one packet every 20 ms
STEP = int(CLOCK * FRAME)  # 1800 RTP units per packet


def feed(stats: ReceptionStats, sequences, start_index: int = 0, delays=None) -> None:
    """Feed packets sent every 20 ms; `delays` maps the packet index to its extra network delay."""
    for index, sequence in enumerate(sequences, start_index):
        delay = delays(index) if delays else 0.0
        stats.update(sequence & 0xFFFF, (index * STEP) & 0xFFFFFFFF, 100.0 + index * FRAME + 0.05 + delay)


def test_no_packets_yet():
    stats = ReceptionStats(CLOCK)
    counters = (stats.packets_received, stats.packets_lost, stats.expected, stats.highest_sequence)
    assert counters == (0, 0, 0, 0)
    assert stats.report_block(7, now=1.0) == ReportBlock(7, 0, 0, 0, 0, 0, 0)
    assert stats.fraction_lost == 0.0 and stats.jitter_ms == 0.0


def test_exactly_five_percent_loss_across_the_wrap():
    stats = ReceptionStats(CLOCK)
    first = 64000
    sent = range(first, first + 2000)
    received = [s for i, s in enumerate(sent) if i % 20 != 10]  # 100 of 2000 dropped
    feed(stats, received)
    assert stats.expected == 2000
    assert stats.packets_received == 1900
    assert stats.packets_lost == 100
    assert stats.highest_sequence == first + 1999  # extended: one cycle past 65535
    block = stats.report_block(0xABC, now=200.0)
    assert block.fraction_lost == 100 * 256 // 2000 == 12
    assert block.packets_lost == 100
    assert block.highest_sequence == first + 1999
    assert abs(stats.fraction_lost - 0.05) < 1 / 256

    # the next interval: 1000 more packets, 10% dropped; fraction covers only this interval
    more = [s for i, s in enumerate(range(first + 2000, first + 3000)) if i % 10 != 5]
    feed(stats, more, start_index=2000)
    block = stats.report_block(0xABC, now=220.0)
    assert block.fraction_lost == 100 * 256 // 1000 == 25
    assert block.packets_lost == 200
    assert stats.fraction_lost == pytest.approx(25 / 256)

    # an interval without packets reports no loss
    assert stats.report_block(0xABC, now=221.0).fraction_lost == 0


def test_sequence_wrap_65535_to_0():
    stats = ReceptionStats(CLOCK)
    feed(stats, [65530, 65531, 65532, 65533, 65534, 65535, 0, 1, 2, 3, 4, 5])
    assert stats.highest_sequence == 65536 + 5
    assert stats.expected == 12
    assert stats.packets_lost == 0
    assert stats.report_block(1, now=0.0).highest_sequence == 65541


@pytest.mark.parametrize(
    "order",
    [
        [1, 2, 4, 3, 5],
        [65534, 65535, 1, 0, 2],  # reordered across the wrap
        [10, 13, 12, 11, 14],
    ],
)
def test_reordered_packets_are_not_lost(order):
    stats = ReceptionStats(CLOCK)
    feed(stats, order)
    block = stats.report_block(1, now=0.0)
    assert (block.fraction_lost, block.packets_lost) == (0, 0)
    assert stats.expected == len(order)


def test_packet_before_the_first_counts_as_received_beyond_expected():
    """RFC A.1 bases expected on the first packet: an earlier one shows up as a negative loss."""
    stats = ReceptionStats(CLOCK)
    feed(stats, [5, 4, 6])
    assert (stats.expected, stats.packets_received, stats.packets_lost) == (2, 3, -1)


def test_duplicates_make_loss_negative():
    stats = ReceptionStats(CLOCK)
    feed(stats, [1, 2, 2, 3, 3, 3])
    assert (stats.expected, stats.packets_received, stats.packets_lost) == (3, 6, -3)
    block = stats.report_block(1, now=0.0)
    assert (block.fraction_lost, block.packets_lost) == (0, -3)


def test_duplicates_hide_loss_in_the_fraction():
    stats = ReceptionStats(CLOCK)
    feed(stats, [1, 1, 3])  # 2 lost, 1 duplicated
    assert stats.report_block(1, now=0.0).fraction_lost == 0
    assert stats.packets_lost == 0


def test_gap_within_max_dropout_is_loss():
    stats = ReceptionStats(CLOCK)
    feed(stats, [0, 2000])
    assert (stats.expected, stats.packets_lost) == (2001, 1999)
    assert stats.report_block(1, now=0.0).fraction_lost == 1999 * 256 // 2001


@pytest.mark.parametrize(
    ("late", "counted"),
    [
        (200 - 99, True),  # less than MAX_MISORDER behind: a late (duplicate or reordered) packet
        (200 - 100, False),  # MAX_MISORDER or more behind: a jump, ignored until a second sequential one
        (200 - 2999, False),
    ],
)
def test_packets_far_behind_are_treated_as_a_jump(late, counted):
    stats = ReceptionStats(CLOCK)
    feed(stats, range(201))
    stats.update(late & 0xFFFF, 0, 200.0)
    assert stats.packets_received == 201 + counted
    assert stats.highest_sequence == 200


def test_single_stray_jump_is_ignored():
    stats = ReceptionStats(CLOCK)
    feed(stats, [100, 101, 102, 40000, 103])
    assert (stats.packets_received, stats.expected, stats.highest_sequence) == (4, 4, 103)


def test_two_sequential_packets_after_a_jump_resynchronise():
    stats = ReceptionStats(CLOCK)
    feed(stats, [100, 101, 102, 40000, 40001, 40002, 40004])
    assert stats.highest_sequence == 40004
    assert (stats.packets_received, stats.expected, stats.packets_lost) == (3, 4, 1)


def test_cumulative_loss_is_clamped_in_the_block():
    stats = ReceptionStats(CLOCK)
    sequence = 0
    for _ in range(2900):  # each step skips 2998 packets: 8.7 M lost, more than 24 bits hold
        stats.update(sequence & 0xFFFF, 0, 0.0)
        sequence += 2999
    assert stats.packets_lost == 2899 * 2998
    block = stats.report_block(1, now=0.0)
    assert block.packets_lost == 0x7FFFFF
    assert block.highest_sequence == 2899 * 2999
    assert ReportBlock.parse(bytes(block)).packets_lost == 0x7FFFFF


def test_constant_transit_gives_zero_jitter():
    stats = ReceptionStats(CLOCK)
    feed(stats, range(500), delays=lambda i: 0.123)
    assert stats.jitter_ms == pytest.approx(0.0, abs=1e-6)
    assert stats.report_block(1, now=0.0).jitter == 0


def test_constant_transit_across_timestamp_wrap():
    stats = ReceptionStats(CLOCK)
    base = 2**32 - 5 * STEP
    for index in range(10):
        stats.update(index, (base + index * STEP) & 0xFFFFFFFF, 50.0 + index * FRAME)
    assert stats.jitter_ms == pytest.approx(0.0, abs=1e-6)


def jitter_after(updates: int, step_ms: float) -> float:
    """A.8 with a constant |D|: J_n = D * (1 - (15/16)^n), starting from 0."""
    return step_ms * (1 - (15 / 16) ** updates)


@pytest.mark.parametrize(
    ("delays", "step_ms"),
    [
        (lambda i: 0.010 * (i % 2), 10.0),  # transit alternates between base and base + 10 ms
        (lambda i: 0.010 if i % 2 else -0.010, 20.0),  # +-10 ms around base: each |D| is 20 ms
    ],
)
@pytest.mark.parametrize("packets", [2, 3, 9, 40, 400])
def test_alternating_transit_jitter_follows_a8(delays, step_ms, packets):
    stats = ReceptionStats(CLOCK)
    feed(stats, range(packets), delays=delays)
    assert stats.jitter_ms == pytest.approx(jitter_after(packets - 1, step_ms), rel=1e-6)
    expected_units = jitter_after(packets - 1, step_ms) * CLOCK / 1000
    assert abs(expected_units - stats.report_block(1, now=0.0).jitter) < 1  # truncated to an integer


def test_alternating_transit_converges_to_ten_ms():
    stats = ReceptionStats(CLOCK)
    feed(stats, range(1000), delays=lambda i: 0.010 * (i % 2))
    assert stats.jitter_ms == pytest.approx(10.0, abs=1e-3)
    assert stats.report_block(1, now=0.0).jitter in (899, 900)


def test_jitter_uses_the_clock_rate():
    stats = ReceptionStats(48000)
    for index in range(300):
        stats.update(index, index * 960, index * 0.02 + 0.005 * (index % 2))
    assert stats.jitter_ms == pytest.approx(5.0, abs=1e-3)
    assert stats.report_block(1, now=0.0).jitter == 239  # 5 ms of 48 kHz is 240 units, approached from below


def test_ignored_packets_do_not_touch_jitter():
    stats = ReceptionStats(CLOCK)
    feed(stats, range(50))
    stats.update(30000, 12345678, 101.0)  # stray jump, ignored
    feed(stats, range(50, 60), start_index=50)
    assert stats.jitter_ms == pytest.approx(0.0, abs=1e-6)


def test_lsr_and_dlsr_from_the_last_sender_report():
    stats = ReceptionStats(CLOCK)
    feed(stats, range(10))
    assert (stats.report_block(1, now=5.0).lsr, stats.report_block(1, now=5.0).dlsr) == (0, 0)
    sr_ntp = 0xE5C8A1B2_80000000
    stats.on_sender_report(sr_ntp, arrival=10.0)
    block = stats.report_block(1, now=11.5)
    assert block.lsr == 0xA1B28000
    assert block.dlsr == 98304  # 1.5 s in 1/65536 s
    # 30 ms each way: the SR left at NTP time t, we held it 1.5 s, our block arrives at t + 1.56 s
    arrival = ntp_middle(sr_ntp) + int(1.56 * 65536)
    assert rtt_ms(block.lsr, block.dlsr, arrival) == pytest.approx(60.0, abs=0.02)


def test_late_retransmission_counts_as_received_but_leaves_jitter_alone():
    stats = ReceptionStats(90000)
    for seq in range(100):
        if seq != 50:
            stats.update(seq, seq * 3000, seq / 30)  # constant transit: jitter stays 0
    assert stats.packets_lost == 1
    stats.update(50, 50 * 3000, 100 / 30 + 0.2)  # NACKed packet arrives 1.8 s late
    assert stats.packets_lost == 0
    assert stats.jitter_ms == 0
