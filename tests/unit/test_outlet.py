"""The record channel's front: events never take the places kept for the engine's records."""

from __future__ import annotations

import trio

from engine.events.outlet import Outlet
from engine.events.stats import Stats
from engine.records import Event, Lost, Record


def test_events_leave_the_reserve_to_lifecycle_records_and_losses_are_reported() -> None:
    send, receive = trio.open_memory_channel[Record](8)
    stats = Stats()
    outlet = Outlet(send, stats, reserve=2)
    events: list[Record] = [Event("g", "m", None, {"n": n}) for n in range(10)]
    outlet.deliver("g", "m", events)
    counts = stats.for_map("g", "m")
    assert (counts.delivered, counts.lost_engine) == (6, 4)
    assert outlet.put(Lost("g", "other", 1, "kernel"))  # the reserve is there for it
    for _ in range(7):
        receive.receive_nowait()
    # The next batch first reports what the last one lost.
    outlet.deliver("g", "m", [Event("g", "m", None, {"n": 10})])
    first = receive.receive_nowait()
    assert isinstance(first, Lost)
    assert (first.count, first.where) == (4, "engine")
    assert outlet.pending_lost == {}
    assert stats.lost == 4
