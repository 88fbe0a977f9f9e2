"""Impairment of a bot's datagrams: the link model with time as a parameter, then Link on a real event loop."""

from __future__ import annotations

import asyncio

import pytest

from sfuctl.bots.impairment import (
    MAX_QUEUE_SECONDS,
    MIN_BURST_BYTES,
    ImpairmentConfig,
    Link,
    LinkModel,
    is_rtp,
)


def drops(config: ImpairmentConfig, seed: str, count: int = 2000) -> list[int]:
    model = LinkModel(config, seed)
    return [i for i in range(count) if model.admit(100, i * 0.001) is None]


def test_loss_is_deterministic_for_a_seed_and_differs_between_seeds() -> None:
    config = ImpairmentConfig(loss=0.05)
    assert drops(config, "7:0:recv:down") == drops(config, "7:0:recv:down")
    assert drops(config, "7:0:recv:down") != drops(config, "7:1:recv:down")


def test_the_loss_pattern_does_not_depend_on_the_other_settings() -> None:
    plain = drops(ImpairmentConfig(loss=0.05), "seed")
    assert drops(ImpairmentConfig(loss=0.05, delay_ms=40, jitter_ms=10), "seed") == plain


@pytest.mark.parametrize("loss", [0.01, 0.05, 0.2])
def test_loss_rate_matches_the_setting(loss: float) -> None:
    model = LinkModel(ImpairmentConfig(loss=loss), "rate")
    for i in range(20_000):
        model.admit(1200, i * 0.0001)
    assert model.datagrams == 20_000
    assert model.dropped / model.datagrams == pytest.approx(loss, abs=0.006)


def test_no_impairment_delivers_at_once() -> None:
    model = LinkModel(ImpairmentConfig(), "x")
    assert [model.admit(1200, t) for t in (0.0, 0.5, 1.0)] == [0.0, 0.5, 1.0]
    assert not ImpairmentConfig().active


def test_delay_is_half_the_round_trip_each_way() -> None:
    model = LinkModel(ImpairmentConfig(delay_ms=40), "x")
    assert model.admit(1200, 10.0) == pytest.approx(10.02)


def test_jitter_adds_up_to_its_value_and_keeps_order() -> None:
    model = LinkModel(ImpairmentConfig(delay_ms=20, jitter_ms=30), "j")
    times = [model.admit(1200, i * 0.002) for i in range(2000)]
    extra = [t - i * 0.002 for i, t in enumerate(times)]
    assert times == sorted(times)
    assert min(extra) >= 0.010 - 1e-9
    assert max(extra) <= 0.010 + 0.030 + 0.002  # order keeping may add the previous packet's lead
    assert max(extra) - min(extra) > 0.02


def test_bandwidth_paces_after_the_burst_and_drops_beyond_the_queue() -> None:
    model = LinkModel(ImpairmentConfig(bandwidth_kbps=800), "b")  # 100 000 bytes per second
    times = [model.admit(1000, 0.0) for _ in range(200)]
    admitted = [t for t in times if t is not None]
    burst = MIN_BURST_BYTES // 1000
    assert admitted[: burst + 1] == [0.0] * (burst + 1)
    steps = {round(b - a, 6) for a, b in zip(admitted[burst + 1 :], admitted[burst + 2 :])}
    assert steps == {0.01}  # 1000 bytes at 100 000 bytes/s
    assert max(admitted) <= MAX_QUEUE_SECONDS + 1e-9
    assert model.queue_dropped == 200 - len(admitted) > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss": 1.5}, "loss must be between 0 and 1, not 1.5"),
        ({"loss": -0.1}, "loss must be between 0 and 1, not -0.1"),
        ({"delay_ms": -1}, "delay must be between 0 and 10000 ms, not -1"),
        ({"jitter_ms": 20000}, "jitter must be between 0 and 10000 ms, not 20000"),
        ({"bandwidth_kbps": 1}, "bandwidth must be between 8 and 10000000 kbps, not 1"),
    ],
)
def test_config_rejects_out_of_range_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        ImpairmentConfig(**kwargs)
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x80\x60" + bytes(10), True),  # RTP, PT 96
        (b"\x80\xc9" + bytes(10), False),  # RTCP RR
        (b"\x00\x01" + bytes(18), False),  # STUN
        (b"\x16\xfe\xfd" + bytes(10), False),  # DTLS
        (b"\x80", False),
    ],
)
def test_is_rtp(data: bytes, expected: bool) -> None:
    assert is_rtp(data) is expected


async def test_link_delivers_in_order_after_the_delay_and_counts_rtp_drops() -> None:
    loop = asyncio.get_running_loop()
    delivered: list[tuple[bytes, float]] = []
    link = Link(
        LinkModel(ImpairmentConfig(loss=0.3, delay_ms=60), "link"),
        lambda data, addr: delivered.append((data, loop.time())),
        loop,
    )
    sent_at = loop.time()
    packets = [b"\x80\x60" + i.to_bytes(2, "big") + bytes(8) for i in range(100)]
    for packet in packets:
        link.push(packet, ("127.0.0.1", 9))
    assert delivered == []
    await asyncio.sleep(0.1)
    received = [data for data, _ in delivered]
    assert received == [p for p in packets if p in received]  # in order
    assert len(received) + link.rtp_dropped == 100
    assert link.rtp_dropped == link.model.dropped > 10
    assert min(at for _, at in delivered) - sent_at >= 0.029
    link.close()
