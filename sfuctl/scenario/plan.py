"""Who joins when: a scenario's stages, ramp and lifetime turned into BotPlans, without any network.

Bots fill *slots*. Slot i is in room (i mod rooms) + 1 at position i // rooms there, so rooms fill evenly,
and publishes when its position is below `publishers`. A stage raises or lowers the number of wanted slots:
new bots join the lowest empty wanted slots, one every 1/ramp seconds (one limiter for the whole run);
surplus bots leave from the highest slot down, also one every 1/ramp seconds. With a lifetime, each bot
leaves that long after it started and a new bot (a new index and name) takes its slot at the next join
opportunity. Network groups are given to slots, so a replacement inherits its predecessor's network.

With several topologies the same call runs once per topology at the same time: the same slots (in rooms
named for the topology) on the same schedule, the SFU's bots first in index order, then the mesh's.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass

from ..bots.config import BotPlan
from .metrics import NO_GROUP, BotInfo
from .model import NetworkGroup, Scenario, Stage
from .topology import DEFAULT_TOPOLOGY, bot_name, room_name

EPSILON = 1e-9


@dataclass(frozen=True)
class Slot:
    """A place a bot occupies: its room, position in the room, role and network group (None: clean)."""

    room: str
    position: int
    publisher: bool
    group: NetworkGroup | None


def layout(
    count: int, rooms: int, publishers: int | None, groups: tuple[NetworkGroup, ...], topology: str = DEFAULT_TOPOLOGY
) -> list[Slot]:
    """The first `count` slots of a topology's call; each group takes its share of the slots still free in
    each room, spread evenly over the positions (the first free one first)."""
    places = [(room_name(topology, i % rooms + 1), i // rooms) for i in range(count)]
    roles = [publishers is None or position < publishers for _, position in places]
    owner: list[NetworkGroup | None] = [None] * count
    for group in groups:
        by_room: dict[str, list[int]] = {}
        for slot, (room, _) in enumerate(places):
            if owner[slot] is not None or (group.rooms is not None and room not in group.rooms):
                continue
            if group.role != "all" and roles[slot] != (group.role == "publishers"):
                continue
            by_room.setdefault(room, []).append(slot)
        for candidates in by_room.values():
            for k, slot in enumerate(candidates):
                if math.floor((k + 1) * group.share + 0.5) > math.floor(k * group.share + 0.5):
                    owner[slot] = group
    return [Slot(room, position, roles[i], owner[i]) for i, (room, position) in enumerate(places)]


def schedule(stages: tuple[Stage, ...], ramp: float, lifetime: float | None) -> list[tuple[int, float, float | None]]:
    """(slot, start, stop) of every bot in start order; stop None means it stays until the end of the run."""
    gap = 1.0 / ramp
    total = math.fsum(stage.duration for stage in stages)
    order = itertools.count()
    events: list[tuple[float, int, int, int]] = []  # (time, priority, sequence, value); leaves sort first
    start = 0.0
    for stage in stages:
        heapq.heappush(events, (start, 1, next(order), stage.bots))
        start += stage.duration
    bots: list[list] = []  # [slot, start, stop]
    occupied: dict[int, int] = {}  # slot -> bot
    vacant: list[int] = []  # heap of slots that may be empty and wanted (checked when popped)
    wanted = 0
    next_join = 0.0
    join_pending = False
    while events:
        now, priority, _, value = heapq.heappop(events)
        if now >= total - EPSILON:
            break
        if priority == 0:  # a lifetime ends
            bot = bots[value]
            if bot[2] is None:
                bot[2] = now
                del occupied[bot[0]]
                if bot[0] < wanted:
                    heapq.heappush(vacant, bot[0])
        elif priority == 1:  # a stage starts
            for slot in range(wanted, value):
                heapq.heappush(vacant, slot)
            wanted = value
            surplus = sorted((slot for slot in occupied if slot >= wanted), reverse=True)
            for j, slot in enumerate(surplus):
                bots[occupied.pop(slot)][2] = now + j * gap
        else:  # a join
            join_pending = False
            while vacant and (vacant[0] >= wanted or vacant[0] in occupied):
                heapq.heappop(vacant)
            if vacant:
                slot = heapq.heappop(vacant)
                occupied[slot] = len(bots)
                bots.append([slot, now, None])
                next_join = now + gap
                if lifetime is not None:
                    heapq.heappush(events, (now + lifetime, 0, next(order), len(bots) - 1))
        while vacant and (vacant[0] >= wanted or vacant[0] in occupied):
            heapq.heappop(vacant)
        if vacant and not join_pending:
            heapq.heappush(events, (max(now, next_join), 2, next(order), 0))
            join_pending = True
    return [(slot, begin, stop if stop is not None and stop < total - EPSILON else None) for slot, begin, stop in bots]


def plan_scenario(scenario: Scenario) -> tuple[list[BotPlan], dict[int, BotInfo]]:
    """Every bot of the run, and what each one is (for the metrics' tags)."""
    settings = scenario.bots
    bots = schedule(scenario.stages, settings.ramp, settings.lifetime)
    plans: list[BotPlan] = []
    infos: dict[int, BotInfo] = {}
    for topology in scenario.topologies:
        slots = layout(scenario.max_bots, settings.rooms, settings.publishers, scenario.network, topology)
        for number, (slot_number, start, stop) in enumerate(bots):
            slot = slots[slot_number]
            group = slot.group
            index = len(plans)
            name = bot_name(topology, number + 1)
            plans.append(
                BotPlan(
                    index=index,
                    name=name,
                    room=slot.room,
                    publish=slot.publisher,
                    subscribe=settings.subscribe,
                    start_offset=round(start, 6),
                    impaired=group is not None and group.impaired,
                    stop_offset=round(stop, 6) if stop is not None else None,
                    network=group.timeline() if group is not None and group.impaired else (),
                    mesh=topology == "mesh",
                    speaker=slot.position if slot.publisher and slot.position < (settings.speakers or 0) and topology != "mesh" else None,
                )
            )
            infos[index] = BotInfo(name, slot.room, group.name if group is not None else NO_GROUP, slot.publisher,
                                   round(start, 6), round(stop, 6) if stop is not None else None)
    return plans, infos
