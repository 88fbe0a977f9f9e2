"""What run_bots tells its observer (RunObserver): the start once, each join, each interval's sample counted from
the start, and per-stream rows only for an observer that wants them."""

from __future__ import annotations

import pytest

from sfuctl.bots.config import BotsConfig
from sfuctl.bots.group import JoinEvent
from sfuctl.bots.observer import Collector
from sfuctl.bots.runner import run_bots
from sfuctl.bots.stats import Sample

from .scenario_files import small_media


class Timed(Collector):
    """A Collector that also keeps each sample's t."""

    def __init__(self) -> None:
        super().__init__()  # wants_streams False: it would keep rows if it were given any
        self.times: list[float] = []

    def sample(self, t: float, sample: Sample) -> None:
        super().sample(t, sample)
        self.times.append(t)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    return small_media(tmp_path_factory.mktemp("observer-media"))


async def test_run_bots_tells_its_observer_the_start_the_joins_and_the_samples_but_no_unwanted_rows(server, media) -> None:
    collector = Timed()
    config = BotsConfig(url=server.url, count=1, duration=1.5, media=media, seed=6, sample_interval=0.25)
    report = await run_bots(config, collector)

    assert report.failed == 0 and len(collector.starts) == 1
    assert [(event.name, event.joined, event.error) for event in collector.joins] == [("bot-1", True, None)]
    assert len(collector.samples) >= 4 and collector.rows == []
    # Each sample's t counts from the start the observer was told, Sample.elapsed from run_bots' call: the two
    # differ by the same amount (the media loading before the start) in every sample.
    offsets = [sample.elapsed - t for t, sample in zip(collector.times, collector.samples)]
    assert offsets[0] > 0.0 and all(offset == pytest.approx(offsets[0], abs=1e-6) for offset in offsets)
    assert collector.times == sorted(collector.times) and 0.0 < collector.times[0] < config.duration


class RaisesOnce(Timed):
    """A Timed collector whose first join and first sample raise, as a buggy observer would."""

    def joined(self, event: JoinEvent) -> None:
        super().joined(event)
        if len(self.joins) == 1:
            raise RuntimeError("an observer's own bug")

    def sample(self, t: float, sample: Sample) -> None:
        super().sample(t, sample)
        if len(self.times) == 1:
            raise RuntimeError("an observer's own bug")


@pytest.mark.parametrize("processes", [1, 2], ids=["in-process", "bot-processes"])
async def test_an_observer_that_raises_is_logged_and_the_run_goes_on(server, media, caplog, processes) -> None:
    collector = RaisesOnce()
    config = BotsConfig(url=server.url, count=2, duration=1.5, media=media, seed=7, sample_interval=0.25, processes=processes)
    report = await run_bots(config, collector)

    assert report.failed == 0 and len(collector.joins) == 2 and len(collector.samples) >= 4
    assert "the run's observer failed on a join" in caplog.text
    assert "the run's observer failed on a sample" in caplog.text
