"""A scenario file (TOML, schema in docs/scenarios.md) read into dataclasses and checked before anything runs.

load_scenario() raises ScenarioError listing every problem at once, each as `FILE:LINE: KEY: what is wrong
and how to fix it`.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..bots.config import MAX_BOTS
from ..bots.impairment import ImpairmentConfig, ImpairmentStep
from ..tokens import check_secret
from ..units import parse_duration
from .metrics import KINDS, NO_GROUP, ROLES, Metric, parse_metric_key
from .thresholds import Expression, parse_expression
from .toml_lines import key_lines, line_of
from .topology import DEFAULT_TOPOLOGY, MAX_MESH_ROOM, TOPOLOGIES, room_name

KeyPath = tuple[str | int, ...]
TOP_KEYS = ("name", "description", "topology", "duration", "stages", "server", "bots", "network", "thresholds")
BOTS_KEYS = ("count", "rooms", "publishers", "audio", "video", "subscribe", "media", "ramp", "lifetime",
             "processes", "seed", "join_timeout", "data", "speakers")
IMPAIRMENT_KEYS = ("loss", "delay", "jitter", "bandwidth")
NETWORK_KEYS = ("name", "share", "rooms", "role", *IMPAIRMENT_KEYS, "timeline")
WINDOW_KEYS = ("from", "to", *IMPAIRMENT_KEYS)
THRESHOLD_KEYS = ("expect", "after", "abort_on_fail")
GROUP_ROLES = ("all", "publishers", "subscribers")
_BANDWIDTH = re.compile(r"(\d+(?:\.\d+)?)\s*(kbps|mbps|gbps|kb/s|mb/s|gb/s)", re.IGNORECASE)
_BANDWIDTH_UNITS = {"kbps": 1.0, "mbps": 1000.0, "gbps": 1_000_000.0, "kb/s": 1.0, "mb/s": 1000.0, "gb/s": 1_000_000.0}
_GROUP_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")


class ScenarioError(Exception):
    """The scenario cannot run; `problems` holds one line per problem (file, line, key, fix)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Stage:
    """Bring the number of bots to `bots` (joining or leaving at the ramp rate), then hold, for `duration` s."""

    duration: float
    bots: int


@dataclass(frozen=True)
class NetworkWindow:
    """From `start` to `end` (s; None: the end of the run) the group's impairment is `impairment`."""

    start: float
    end: float | None
    impairment: ImpairmentConfig


@dataclass(frozen=True)
class NetworkGroup:
    """Impairment for a share of the bots of each room: `base` from the start, changed during `windows`."""

    name: str
    share: float
    rooms: tuple[str, ...] | None
    role: str
    base: ImpairmentConfig
    windows: tuple[NetworkWindow, ...] = ()

    @property
    def impaired(self) -> bool:
        return self.base.active or any(w.impairment.active for w in self.windows)

    def timeline(self) -> tuple[ImpairmentStep, ...]:
        """The group's settings as steps from the start of the run."""
        steps = [ImpairmentStep(0.0, self.base)]
        for window in self.windows:
            steps.append(ImpairmentStep(window.start, window.impairment))
            if window.end is not None:
                steps.append(ImpairmentStep(window.end, self.base))
        return tuple(steps)


@dataclass(frozen=True)
class BotsSettings:
    """Who the bots are and how they join: rooms, publishers per room, media, joins per second, lifetime."""

    rooms: int = 1
    publishers: int | None = None
    audio: bool = True
    video: bool = True
    subscribe: bool = True
    media: tuple[str, ...] = ()
    simulcast: bool = False  # publishers send the video as simulcast encodings (media = { simulcast = true })
    ramp: float = 5.0
    lifetime: float | None = None
    processes: int | None = None
    seed: int | None = None
    join_timeout: float = 20.0
    data: float = 0.0  # chat messages per second per publishing bot on a data channel
    speakers: int | None = None  # the first N publishing bots of each room take turns talking (audio levels)


@dataclass(frozen=True)
class ServerSettings:
    """`url` of a running server, or None for the embedded one with `workers` worker processes.
    `auth_secret`: the embedded server requires access tokens and the runner mints them (bots, stats); with
    `url`, the running server's secret."""

    url: str | None = None
    workers: int = 1
    auth_secret: str | None = None


@dataclass(frozen=True)
class Threshold:
    """`expression` over the samples of `metric` matching `tags`, taken from `after` seconds on."""

    key: str
    metric: Metric
    tags: tuple[tuple[str, str], ...]
    expression: Expression
    after: float = 0.0
    abort_on_fail: bool = False
    line: int | None = None

    @property
    def label(self) -> str:
        return f"{self.key}: {self.expression.text.strip()}"


@dataclass(frozen=True)
class Scenario:
    """A whole scenario file, checked."""

    path: Path
    name: str
    description: str
    server: ServerSettings
    bots: BotsSettings
    stages: tuple[Stage, ...]
    network: tuple[NetworkGroup, ...]
    thresholds: tuple[Threshold, ...]
    topologies: tuple[str, ...] = (DEFAULT_TOPOLOGY,)

    @property
    def duration(self) -> float:
        return math.fsum(stage.duration for stage in self.stages)

    @property
    def max_bots(self) -> int:
        return max(stage.bots for stage in self.stages)

    @property
    def room_names(self) -> list[str]:
        """Every room of the run: those of each topology's call, in the order of `topologies`."""
        return [name for topology in self.topologies for name in self.rooms_of(topology)]

    def rooms_of(self, topology: str) -> list[str]:
        return [room_name(topology, i + 1) for i in range(self.bots.rooms)]

    def stage_at(self, t: float) -> int:
        """Index of the stage running at `t` seconds (the last one from its end on)."""
        end = 0.0
        for index, stage in enumerate(self.stages):
            end += stage.duration
            if t < end:
                return index
        return len(self.stages) - 1

    def with_url(self, url: str | None) -> Scenario:
        """The same scenario against the server at `url` (None keeps the file's choice)."""
        return self if url is None else replace(self, server=ServerSettings(url=url, auth_secret=self.server.auth_secret))


def parse_fraction(value: object) -> float:
    """0.05 or '5%' -> 0.05, within 0..1."""
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str) and value.strip().endswith("%"):
        try:
            number = float(value.strip()[:-1]) / 100
        except ValueError:
            number = None
    if number is None or not 0.0 <= number <= 1.0:
        raise ValueError(f"bad fraction {value!r}: write a number from 0 to 1 or a percentage, e.g. 0.05 or \"5%\"")
    return number


def parse_bandwidth(value: object) -> float:
    """'500kbps', '2mbps' -> kbps."""
    if isinstance(value, str):
        match = _BANDWIDTH.fullmatch(value.strip())
        if match:
            return float(match[1]) * _BANDWIDTH_UNITS[match[2].lower()]
    raise ValueError(f"bad bandwidth {value!r}: write a number with a unit, e.g. \"500kb/s\" or \"2Mb/s\"")


def load_scenario(path: Path) -> Scenario:
    """Read and check a scenario file; ScenarioError lists every problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError([f"{path}: cannot read the scenario: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ScenarioError([f"{path}: not a UTF-8 text file; a scenario is TOML (docs/scenarios.md)"]) from None
    return parse_scenario(text, path)


def parse_scenario(text: str, path: Path) -> Scenario:
    """Check the TOML `text` of the scenario file at `path` (media paths are relative to its folder)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = re.search(r"\(at line (\d+), column \d+\)", message)
        where = f"{path}:{found[1]}" if found else str(path)
        reason = message[: found.start()].strip() if found else message
        raise ScenarioError([f"{where}: not valid TOML: {reason}"]) from None
    reader = _Reader(path, key_lines(text), text)
    scenario = reader.scenario(data)
    if reader.problems:
        raise ScenarioError([message for _, message in sorted(reader.problems, key=lambda p: p[0])])
    assert scenario is not None
    return scenario


class _Reader:
    """Reads the document, recording every problem with its line instead of stopping at the first."""

    def __init__(self, path: Path, lines: dict[KeyPath, int], text: str) -> None:
        self.path = path
        self.lines = lines
        self.text_lines = text.splitlines()
        self.problems: list[tuple[int, str]] = []  # (line, message): reported in line order

    # -- problems -----------------------------------------------------------------------------------------
    def problem(self, key: KeyPath, message: str, line: int | None = None) -> None:
        line = line if line is not None else line_of(self.lines, key)
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        self.problems.append((line or 0, f"{where}: {_dotted(key)}: {message}" if key else f"{where}: {message}"))

    def literal_line(self, key: KeyPath, literal: str) -> int | None:
        """The line of the string `literal` at or after `key`'s line (for elements of inline tables)."""
        start = line_of(self.lines, key)
        if start is None:
            return None
        for number in range(start, len(self.text_lines) + 1):
            if f'"{literal}"' in self.text_lines[number - 1] or f"'{literal}'" in self.text_lines[number - 1]:
                return number
        return start

    def unknown(self, table: dict, key: KeyPath, known: tuple[str, ...]) -> None:
        for name in table:
            if name not in known:
                self.problem(key + (name,), f"unknown key; known keys here: {', '.join(known)}")

    def get(self, table: dict, key: KeyPath, convert: Callable[[Any], Any], default: Any = None) -> Any:
        """table[key[-1]] converted, or `default` when absent or wrong (a problem is recorded)."""
        name = key[-1]
        if name not in table:
            return default
        try:
            return convert(table[name])
        except ValueError as exc:
            self.problem(key, str(exc))
            return default

    # -- the document -------------------------------------------------------------------------------------
    def scenario(self, data: dict) -> Scenario | None:
        self.unknown(data, (), TOP_KEYS)
        name = self.get(data, ("name",), _string("a name"), self.path.stem)
        description = self.get(data, ("description",), _string("a description"), "")
        topologies = self.get(data, ("topology",), _topologies, (DEFAULT_TOPOLOGY,))
        server = self.server(_table(self, data, ("server",)))
        bots_table = _table(self, data, ("bots",))
        bots = self.bots(bots_table)
        stages = self.stages(data, bots_table, bots)
        # Without usable stages the rest is still checked, against a run of unknown length.
        duration = math.fsum(stage.duration for stage in stages) if stages else math.inf
        rooms = [room_name(topology, i + 1) for topology in topologies for i in range(bots.rooms)]
        max_bots = max((stage.bots for stage in stages), default=0)
        if bots.rooms > max_bots > 0:
            self.problem(("bots", "rooms"), f"{bots.rooms} rooms for at most {max_bots} bots: "
                                            f"use at most {max_bots} rooms or more bots")
        self.check_topologies(topologies, bots, max_bots)
        network = self.network(data.get("network", []), duration, rooms)
        thresholds = self.thresholds(_table(self, data, ("thresholds",)), duration, rooms, [g.name for g in network],
                                     topologies)
        if not stages:
            return None
        return Scenario(self.path, name, description, server, bots, tuple(stages), tuple(network), tuple(thresholds),
                        topologies)

    def check_topologies(self, topologies: tuple[str, ...], bots: BotsSettings, max_bots: int) -> None:
        """A mesh room small enough to measure the topology rather than the bots; a process per topology."""
        per_room = math.ceil(max_bots / bots.rooms)
        if "mesh" in topologies and per_room > MAX_MESH_ROOM:
            self.problem(("topology",), f"{per_room} bots in a mesh room: a full mesh of n peers has n(n-1)/2 "
                                        f"connections ({per_room * (per_room - 1) // 2} here) and every peer sends "
                                        f"its media n-1 times, so a mesh room takes at most {MAX_MESH_ROOM} bots; "
                                        f"use bots.rooms = {math.ceil(max_bots / MAX_MESH_ROOM)} or more, or fewer bots")
        if bots.processes is not None and bots.processes < len(topologies):
            self.problem(("bots", "processes"), f"{bots.processes} process for {len(topologies)} topologies: each "
                                                "topology's bots run in processes of their own so that "
                                                "bots.cpu_percent does not mix them; use processes = "
                                                f"{len(topologies)} or more, or leave it out")

    def server(self, table: dict) -> ServerSettings:
        self.unknown(table, ("server",), ("url", "workers", "auth_secret"))
        url = self.get(table, ("server", "url"), _url)
        workers = self.get(table, ("server", "workers"), _integer(1, 64), 1)
        auth_secret = self.get(table, ("server", "auth_secret"), _secret)
        if url is not None and "workers" in table:
            self.problem(("server", "workers"), "workers is for the embedded server; remove it or remove url")
        return ServerSettings(url=url, workers=workers, auth_secret=auth_secret)

    def bots(self, table: dict) -> BotsSettings:
        self.unknown(table, ("bots",), BOTS_KEYS)
        key = ("bots",)
        # media is a list of files, or a table: { files = [...], simulcast = true } (TOML: media.simulcast = true)
        media_table = table.get("media") if isinstance(table.get("media"), dict) else None
        simulcast = False
        files_key = key + ("media",)
        if media_table is not None:
            self.unknown(media_table, files_key, ("files", "simulcast"))
            simulcast = self.get(media_table, files_key + ("simulcast",), _boolean, False)
            media = tuple(self.get(media_table, files_key + ("files",), _string_list("media files"), []))
            files_key += ("files",)
        else:
            media = tuple(self.get(table, files_key, _string_list("media files"), []))
        resolved = []
        for index, item in enumerate(media):
            file = (self.path.parent / item).resolve()
            if not file.is_file():
                self.problem(files_key + (index,), f"no such file: {file}; give a path relative to the scenario "
                                                   "file, or remove media to use the generated test media")
            resolved.append(str(file))
        settings = BotsSettings(
            rooms=self.get(table, key + ("rooms",), _integer(1, MAX_BOTS), 1),
            publishers=self.get(table, key + ("publishers",), _integer(0, MAX_BOTS)),
            audio=self.get(table, key + ("audio",), _boolean, True),
            video=self.get(table, key + ("video",), _boolean, True),
            subscribe=self.get(table, key + ("subscribe",), _boolean, True),
            media=tuple(resolved),
            simulcast=simulcast,
            ramp=self.get(table, key + ("ramp",), _number(0.01, 1000, "joins per second"), 5.0),
            lifetime=self.get(table, key + ("lifetime",), _duration(1.0)),
            processes=self.get(table, key + ("processes",), _integer(1, 256)),
            seed=self.get(table, key + ("seed",), _integer(0, 2**63 - 1)),
            join_timeout=self.get(table, key + ("join_timeout",), _duration(1.0, 600.0), 20.0),
            data=self.get(table, key + ("data",), _number(0, 1000, "messages per second"), 0.0),
            speakers=self.get(table, key + ("speakers",), _integer(0, MAX_BOTS)),
        )
        if not (settings.audio or settings.video):
            self.problem(key + ("video",), "bots need audio or video: set audio = true or video = true")
        if settings.speakers is not None and not settings.audio:
            self.problem(key + ("speakers",), "speakers talk on their audio: set audio = true or remove speakers")
        if settings.simulcast and not settings.video:
            self.problem(key + ("media", "simulcast"), "simulcast is for video: set video = true or remove it")
        return settings

    def stages(self, data: dict, bots_table: dict, bots: BotsSettings) -> list[Stage]:
        """`stages`, or the shorthand `duration` + `bots.count` (one stage)."""
        if "stages" in data:
            for extra in (("duration",), ("bots", "count")):
                if (data if len(extra) == 1 else bots_table).get(extra[-1]) is not None:
                    self.problem(extra, "give either stages or duration + bots.count, not both")
            raw = data["stages"]
            if not isinstance(raw, list) or not raw or not all(isinstance(s, dict) for s in raw):
                self.problem(("stages",), 'expected a list of tables, e.g. stages = [{ duration = "30s", bots = 10 }]')
                return []
            stages = []
            for index, table in enumerate(raw):
                key = ("stages", index)
                self.unknown(table, key, ("duration", "bots"))
                if "duration" not in table or "bots" not in table:
                    self.problem(key, 'each stage needs duration and bots, e.g. { duration = "30s", bots = 10 }')
                    continue
                duration = self.get(table, key + ("duration",), _duration(0.1))
                count = self.get(table, key + ("bots",), _integer(0, MAX_BOTS))
                if duration is not None and count is not None:
                    stages.append(Stage(duration, count))
            if len(stages) != len(raw):
                return []
        else:
            duration = self.get(data, ("duration",), _duration(0.1))
            count = self.get(bots_table, ("bots", "count"), _integer(1, MAX_BOTS))
            if duration is None or count is None:
                if "duration" not in data or "count" not in bots_table:
                    self.problem((), 'say how long and with how many bots: duration = "30s" and [bots] count = 10, '
                                     'or stages = [{ duration = "30s", bots = 10 }]')
                return []
            stages = [Stage(duration, count)]
        if max(stage.bots for stage in stages) == 0:
            self.problem(("stages",), "no stage has any bots: give at least one stage bots > 0")
        previous = 0
        for index, stage in enumerate(stages):
            change = abs(stage.bots - previous)
            needed = change / bots.ramp
            if needed > stage.duration + 1e-9:
                key: KeyPath = ("stages", index) if "stages" in data else ("duration",)
                self.problem(key, f"going from {previous} to {stage.bots} bots at bots.ramp = {bots.ramp:g}/s takes "
                                  f"{needed:g} s but the stage lasts {stage.duration:g} s: lengthen it or raise bots.ramp")
            previous = stage.bots
        if bots.lifetime is not None:
            peak = max(stage.bots for stage in stages)
            if peak / bots.lifetime > bots.ramp:
                self.problem(("bots", "lifetime"), f"replacing {peak} bots every {bots.lifetime:g} s needs "
                                                   f"{peak / bots.lifetime:g} joins/s but bots.ramp is {bots.ramp:g}: "
                                                   "lengthen lifetime or raise ramp")
        return stages

    def impairment(self, table: dict, key: KeyPath, base: ImpairmentConfig) -> ImpairmentConfig:
        """The impairment keys of `table` over `base` (keys not given keep base's values)."""
        loss = self.get(table, key + ("loss",), parse_fraction, base.loss)
        delay = self.get(table, key + ("delay",), _duration(0.0, 10.0), base.delay_ms / 1000)
        jitter = self.get(table, key + ("jitter",), _duration(0.0, 10.0), base.jitter_ms / 1000)
        bandwidth = self.get(table, key + ("bandwidth",), parse_bandwidth, base.bandwidth_kbps)
        try:
            return ImpairmentConfig(loss=loss, delay_ms=delay * 1000, jitter_ms=jitter * 1000, bandwidth_kbps=bandwidth)
        except ValueError as exc:
            self.problem(key, str(exc))
            return base

    def network(self, raw: object, duration: float, rooms: list[str]) -> list[NetworkGroup]:
        if not isinstance(raw, list) or not all(isinstance(g, dict) for g in raw):
            self.problem(("network",), 'expected [[network]] tables, e.g. [[network]] name = "lossy" loss = "5%"')
            return []
        groups: list[NetworkGroup] = []
        for index, table in enumerate(raw):
            key = ("network", index)
            self.unknown(table, key, NETWORK_KEYS)
            name = self.get(table, key + ("name",), _string("a group name"))
            if name is None:
                if "name" not in table:
                    self.problem(key, 'each [[network]] group needs a name, e.g. name = "lossy" (the `group` tag)')
                continue
            if not _GROUP_NAME.fullmatch(name) or name == NO_GROUP:
                self.problem(key + ("name",), f"bad group name {name!r}: use 1-32 letters, digits, - or _ "
                                              f"(and not {NO_GROUP!r}, the tag of bots in no group)")
            if name in [g.name for g in groups]:
                self.problem(key + ("name",), f"group {name!r} is defined twice; give each group its own name")
            share = self.get(table, key + ("share",), parse_fraction, 1.0)
            group_rooms = self.get(table, key + ("rooms",), _string_list("room names"))
            for room in group_rooms or ():
                if room not in rooms:
                    self.problem(key + ("rooms",), f"no room {room!r} in this scenario; its rooms: {', '.join(rooms)}")
            role = self.get(table, key + ("role",), _choice(GROUP_ROLES), "all")
            base = self.impairment(table, key, ImpairmentConfig())
            windows = self.windows(table.get("timeline", []), key + ("timeline",), base, duration)
            groups.append(NetworkGroup(name, share, tuple(group_rooms) if group_rooms else None, role, base,
                                       tuple(windows)))
        return groups

    def windows(self, raw: object, key: KeyPath, base: ImpairmentConfig, duration: float) -> list[NetworkWindow]:
        if not isinstance(raw, list) or not all(isinstance(w, dict) for w in raw):
            self.problem(key, 'expected [[network.timeline]] tables, e.g. from = "20s" to = "40s" loss = "10%"')
            return []
        windows: list[NetworkWindow] = []
        for index, table in enumerate(raw):
            where = key + (index,)
            self.unknown(table, where, WINDOW_KEYS)
            if "from" not in table:
                self.problem(where, 'each timeline window needs from, e.g. from = "20s"')
                continue
            start = self.get(table, where + ("from",), _duration(0.0))
            end = self.get(table, where + ("to",), _duration(0.0))
            if start is None:
                continue
            if start >= duration:
                self.problem(where + ("from",), f"{start:g} s is not before the end of the run ({duration:g} s)")
            if end is not None and end <= start:
                self.problem(where + ("to",), f"to ({end:g} s) must come after from ({start:g} s)")
            if end is not None and end > duration:
                self.problem(where + ("to",), f"{end:g} s is after the end of the run ({duration:g} s); "
                                              "leave `to` out to keep the window until the end")
            if windows and (windows[-1].end is None or start < windows[-1].end):
                self.problem(where + ("from",), "windows must be in time order and must not overlap")
            windows.append(NetworkWindow(start, end, self.impairment(table, where, base)))
        return windows

    def thresholds(self, table: dict, duration: float, rooms: list[str], groups: list[str],
                   topologies: tuple[str, ...]) -> list[Threshold]:
        thresholds: list[Threshold] = []
        for metric_key, value in table.items():
            key = ("thresholds", metric_key)
            try:
                metric, tags = parse_metric_key(metric_key)
            except ValueError as exc:
                self.problem(key, str(exc))
                continue
            for tag, tag_value in tags.items():
                allowed = {"kind": KINDS, "role": ROLES, "room": rooms, "group": [*groups, NO_GROUP],
                           "topology": topologies}[tag]
                if tag_value not in allowed:
                    self.problem(key, f"no {tag} {tag_value!r} in this scenario; use one of {', '.join(allowed)}")
            after, abort, expressions = 0.0, False, value
            if isinstance(value, dict):
                self.unknown(value, key, THRESHOLD_KEYS)
                expressions = value.get("expect")
                after = self.get(value, key + ("after",), _duration(0.0), 0.0)
                abort = self.get(value, key + ("abort_on_fail",), _boolean, False)
                if after >= duration:
                    self.problem(key + ("after",), f"{after:g} s leaves nothing of the {duration:g} s run to measure")
            if not isinstance(expressions, list) or not expressions:
                self.problem(key, 'expected a list of expressions, e.g. ["p95 < 0.01"], or a table '
                                  '{ expect = ["p95 < 0.01"], after = "10s", abort_on_fail = true }')
                continue
            for index, text in enumerate(expressions):
                try:
                    expression = parse_expression(text)
                except ValueError as exc:
                    line = self.literal_line(key + (index,), text) if isinstance(text, str) else None
                    self.problem(key + (index,), str(exc), line)
                    continue
                line = line_of(self.lines, key + (index,))
                thresholds.append(Threshold(metric_key, metric, tuple(tags.items()), expression, after, abort, line))
        return thresholds


# -- converters: value -> typed value, ValueError with the fix ---------------------------------------------------
def _table(reader: _Reader, data: dict, key: KeyPath) -> dict:
    value = data.get(key[-1], {})
    if not isinstance(value, dict):
        reader.problem(key, f"expected a table ([{key[-1]}]), not {type(value).__name__}")
        return {}
    return value


def _string(what: str) -> Callable[[object], str]:
    def convert(value: object) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"expected {what} as a non-empty string, not {value!r}")
        return value
    return convert


def _string_list(what: str) -> Callable[[object], list[str]]:
    def convert(value: object) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise ValueError(f"expected a list of {what} (strings), not {value!r}")
        return value
    return convert


def _topologies(value: object) -> tuple[str, ...]:
    """A topology's name or a list of them (each at most once) -> the topologies, in the order given."""
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(item, str) and item in TOPOLOGIES for item in items):
        raise ValueError(f'expected "sfu", "mesh" or a list of them, e.g. topology = ["sfu", "mesh"] to run the '
                         f"same call both ways at once, not {value!r}")
    twice = [item for index, item in enumerate(items) if item in items[:index]]
    if twice:
        raise ValueError(f"{twice[0]!r} is listed twice; list each topology at most once, e.g. "
                         'topology = ["sfu", "mesh"]')
    return tuple(items)


def _choice(choices: tuple[str, ...]) -> Callable[[object], str]:
    def convert(value: object) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(repr(c) for c in choices)}, not {value!r}")
        return str(value)
    return convert


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, not {value!r}")
    return value


def _integer(low: int, high: int) -> Callable[[object], int]:
    def convert(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"expected a whole number from {low} to {high}, not {value!r}")
        return value
    return convert


def _number(low: float, high: float, unit: str) -> Callable[[object], float]:
    def convert(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ValueError(f"expected a number of {unit} from {low:g} to {high:g}, not {value!r}")
        return float(value)
    return convert


def _duration(low: float, high: float = 86_400.0) -> Callable[[object], float]:
    def convert(value: object) -> float:
        seconds = parse_duration(value)
        if not low <= seconds <= high:
            raise ValueError(f"{value!r} is out of range: use {_seconds(low)} to {_seconds(high)}")
        return seconds
    return convert


def _seconds(value: float) -> str:
    return f"{value * 1000:g}ms" if 0 < value < 1 else f"{value:g}s"


def _secret(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected the auth secret as a string, not {value!r}")
    check_secret(value)
    return value


def _url(value: object) -> str:
    if not isinstance(value, str) or not value.startswith(("ws://", "wss://")):
        raise ValueError(f"expected the server's signaling URL, ws://HOST:PORT, not {value!r}")
    return value


def _dotted(key: KeyPath) -> str:
    """('thresholds', 'consumer.x', 0) -> thresholds."consumer.x"[0]"""
    text = ""
    for part in key:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            name = part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else f'"{part}"'
            text += f".{name}" if text else name
    return text
