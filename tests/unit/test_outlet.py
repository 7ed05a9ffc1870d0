"""The record channel's front: events never take the places kept for the engine's records."""

from __future__ import annotations

import trio
import trio.testing

from engine.events.outlet import Outlet
from engine.events.queue import RecordQueue
from engine.events.runs import Item
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
