"""The record channel's front: events never take the places kept for the engine's records;
runs of events not made yet count as their records."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Sequence

import trio
import trio.testing

from engine.events.decode import Field, build_decoder
from engine.events.outlet import Outlet
from engine.events.queue import RecordQueue
from engine.events.runs import (
    EventRun,
    Item,
    Records,
    RunMaker,
    Task,
    each_record,
    made,
)
from engine.events.stats import Stats
from engine.records import Event, Lost, Record


def test_events_leave_the_reserve_to_lifecycle_records_and_losses_are_reported() -> None:
    queue = RecordQueue(8)
    stats = Stats()
    outlet = Outlet(queue, stats, reserve=2)
    events: list[Record] = [Event("g", "m", None, {"n": n}) for n in range(10)]
    outlet.deliver("g", "m", events)
    counts = stats.for_map("g", "m")
    assert (counts.delivered, counts.lost_engine) == (6, 4)
    assert outlet.put(Lost("g", "other", 1, "kernel"))  # the reserve is there for it
    assert len(queue.take_nowait()) == 7
    # The next batch first reports what the last one lost.
    outlet.deliver("g", "m", [Event("g", "m", None, {"n": 10})])
    first = queue.take_nowait()[0]
    assert isinstance(first, Lost)
    assert (first.count, first.where) == (4, "engine")
    assert outlet.pending_lost == {}
    assert stats.lost == 4


async def test_the_queue_hands_over_everything_waiting_and_ends_once_closed_and_empty() -> None:
    queue = RecordQueue(3)
    records: list[Record] = [Event("g", "m", None, {"n": n}) for n in range(5)]
    assert queue.put_many(records, leave=1) == 2
    assert queue.put_many(records[2:]) == 1
    assert queue.free() == 0
    assert await queue.take() == records[:3]
    queue.put(records[3])
    queue.close()
    assert not queue.put(records[4])  # closed: nothing more goes in
    assert await queue.take() == [records[3]]
    assert await queue.take() == []


async def test_a_consumer_waiting_on_an_empty_queue_wakes_for_the_next_record() -> None:
    queue = RecordQueue(4)
    got: list[list[Item]] = []

    async def consume() -> None:
        got.append(await queue.take())

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            await trio.testing.wait_all_tasks_blocked()
            queue.put(Lost("g", "m", 1, "kernel"))
    assert [type(r) for r in got[0]] == [Lost]


def event_run(count: int) -> EventRun:
    decoder = build_decoder([Field("n", "u32")])
    spans = b"".join(struct.pack("<I", n) for n in range(count))
    task = Task({"mntns": 1, "netns": 2, "cgroup": 3, "tgid": 4}, None)
    return EventRun(RunMaker("g", "m", None, decoder), Records(spans, decoder.struct), task)


class _Hooks:
    def __init__(self, listening: bool) -> None:
        self.seen: list[Record] = []
        self._listening = listening

    def dispatch(self, record: Record) -> None:
        self.seen.append(record)

    def dispatch_many(self, records: Sequence[Record]) -> None:
        self.seen.extend(records)

    def listening(self) -> bool:
        return self._listening


def test_a_run_of_unmade_events_counts_as_its_records_and_is_cut_at_the_bound() -> None:
    queue = RecordQueue(8)
    stats = Stats()
    outlet = Outlet(queue, stats, reserve=2, tap=_Hooks(listening=False))
    run = event_run(5)
    outlet.deliver("g", "m", [run, Lost("g", "m", 1, "kernel"), event_run(3)])
    counts = stats.for_map("g", "m")
    assert (counts.delivered, counts.lost_engine) == (6, 3)
    assert len(queue) == 6
    taken = queue.take_nowait()
    assert [type(i) for i in taken] == [EventRun, Lost]  # queued unmade: nobody needs them
    assert made(taken) == [*run.events(), taken[1]]
    assert [e.data["n"] for e in run.events()] == [0, 1, 2, 3, 4]
    assert run.events() == [
        Event("g", "m", None, {"n": n}, None, run.task.origin) for n in range(5)
    ]
    queue.put_many([event_run(10)])  # cut where the bound falls
    assert [len(i) for i in queue.take_nowait() if isinstance(i, EventRun)] == [8]


def test_hooks_and_the_filter_get_a_runs_events_made_and_the_queue_the_same_events() -> None:
    queue = RecordQueue(16)
    hooks = _Hooks(listening=True)
    outlet = Outlet(queue, Stats(), tap=hooks)
    outlet.deliver("g", "m", [event_run(3)])
    taken = queue.take_nowait()
    assert all(isinstance(r, Event) for r in taken) and len(taken) == 3
    assert hooks.seen == taken
    outlet = Outlet(queue, Stats(), keeps=lambda e: e.data["n"] != 1)
    outlet.deliver("g", "m", [event_run(3)])
    assert [r.data["n"] for r in queue.take_nowait() if isinstance(r, Event)] == [0, 2]


async def test_each_record_makes_a_runs_events_in_order() -> None:
    lost = Lost("g", "m", 1, "kernel")
    long = event_run(2000)

    async def runs() -> AsyncIterator[list[Item]]:
        yield [lost, long]
        yield [event_run(2), lost]

    got = [r async for r in each_record(runs())]
    assert got == [lost, *long.events(), *event_run(2).events(), lost]
