"""Receiver-side statistics of one RTP source (RFC 3550 A.1, A.3, A.8) and its report blocks."""

from __future__ import annotations

from sfuctl.rtc.rtcp import ReportBlock, ntp_middle

RTP_SEQ_MOD = 1 << 16
MAX_DROPOUT = 3000
MAX_MISORDER = 100


class ReceptionStats:
    """Sequence tracking, loss and interarrival jitter of one source, without probation."""

    def __init__(self, clock_rate: int) -> None:
        self._clock_rate = clock_rate
        self._started = False
        self._base_seq = 0
        self._max_seq = 0
        self._bad_seq = RTP_SEQ_MOD + 1
        self._cycles = 0
        self._received = 0
        self._received_prior = 0
        self._expected_prior = 0
        self._transit: float | None = None
        self._jitter = 0.0
        self._fraction = 0
        self._lsr = 0
        self._sr_arrival = 0.0

    def _init_seq(self, sequence: int) -> None:
        self._started = True
        self._base_seq = sequence
        self._max_seq = sequence
        self._bad_seq = RTP_SEQ_MOD + 1
        self._cycles = 0
        self._received = 0
        self._received_prior = 0
        self._expected_prior = 0
        self._transit = None

    def update(self, sequence: int, timestamp: int, arrival: float) -> None:
        """Account for one received packet; arrival is in seconds on any monotonic clock.

        Jitter (A.8) is updated only by packets that advance the sequence: a late packet, a duplicate or a NACK
        retransmission (same SSRC, old sequence number) says nothing about network jitter and would inflate it.
        """
        advances = True
        if not self._started:
            self._init_seq(sequence)
        else:
            udelta = (sequence - self._max_seq) & 0xFFFF
            if 0 < udelta < MAX_DROPOUT:
                if sequence < self._max_seq:
                    self._cycles += RTP_SEQ_MOD
                self._max_seq = sequence
            elif MAX_DROPOUT <= udelta <= RTP_SEQ_MOD - MAX_MISORDER:
                if sequence != self._bad_seq:
                    self._bad_seq = (sequence + 1) & 0xFFFF
                    return
                self._init_seq(sequence)  # two sequential packets after a jump: the source restarted
            else:
                advances = False  # duplicate, reordered or retransmitted
        self._received += 1
        if advances:
            transit = arrival * self._clock_rate - timestamp
            if self._transit is not None:
                delta = (transit - self._transit + 2**31) % 2**32 - 2**31
                self._jitter += (abs(delta) - self._jitter) / 16.0
            self._transit = transit

    def on_sender_report(self, ntp_timestamp: int, arrival: float) -> None:
        """Remember the LSR of a received SR and when it arrived (same clock as report_block's now)."""
        self._lsr = ntp_middle(ntp_timestamp)
        self._sr_arrival = arrival

    def report_block(self, ssrc: int, now: float) -> ReportBlock:
        """Build the report block for this source; the fraction covers the time since the last call."""
        expected = self.expected
        expected_interval = expected - self._expected_prior
        received_interval = self._received - self._received_prior
        self._expected_prior = expected
        self._received_prior = self._received
        lost_interval = expected_interval - received_interval
        if expected_interval <= 0 or lost_interval <= 0:
            self._fraction = 0
        else:
            self._fraction = min(255, (lost_interval << 8) // expected_interval)
        lost = max(-0x800000, min(0x7FFFFF, expected - self._received))
        dlsr = 0
        if self._lsr:
            dlsr = min(0xFFFFFFFF, max(0, int((now - self._sr_arrival) * 65536)))
        return ReportBlock(
            ssrc=ssrc,
            fraction_lost=self._fraction,
            packets_lost=lost,
            highest_sequence=self.highest_sequence & 0xFFFFFFFF,
            jitter=int(self._jitter),
            lsr=self._lsr,
            dlsr=dlsr,
        )

    @property
    def packets_received(self) -> int:
        return self._received

    @property
    def highest_sequence(self) -> int:
        """Extended highest sequence number received (cycles * 2^16 + max sequence)."""
        return self._cycles + self._max_seq

    @property
    def expected(self) -> int:
        return self.highest_sequence - self._base_seq + 1 if self._started else 0

    @property
    def packets_lost(self) -> int:
        """Cumulative loss; negative when duplicates outnumber losses."""
        return self.expected - self._received

    @property
    def fraction_lost(self) -> float:
        """Fraction lost (0..1) over the interval that ended at the last report_block() call."""
        return self._fraction / 256.0

    @property
    def jitter_ms(self) -> float:
        return self._jitter * 1000.0 / self._clock_rate
