"""The bounded queue of records between the engine and ``events()``, taken a run at a time.

A trio memory channel costs a scheduler pass per ``receive()`` and a method call per record on
both ends; the pump writes a whole batch at once and the consumer can read everything that
waits at once, so the queue hands over runs: ``put_many`` appends what fits, ``take`` waits
until something is there and returns all of it (one scheduler pass per run, not per record).
The bound is in records, as the channel's was; a run of events not made yet (``EventRun``,
engine/events/runs.py) counts as the records it stands for, and is cut where the bound falls.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

import attrs
import trio

from engine.events.runs import EventRun, Item, count


@attrs.define
class RecordQueue:
    """At most ``size`` records; ``close()`` ends the consumer once it has taken the rest."""

    size: int
    _items: collections.deque[Item] = attrs.Factory(collections.deque)
    _count: int = 0  # the records the items stand for
    _ready: trio.Event = attrs.Factory(trio.Event)
    _closed: bool = False

    def __len__(self) -> int:
        return self._count

    def free(self) -> int:
        return self.size - self._count

    def put_many(self, items: Sequence[Item], *, leave: int = 0) -> int:
        """Append as many of the records ``items`` stand for (from the first) as leave
        ``leave`` places free; how many were appended."""
        if self._closed:
            return 0
        room = max(0, self.size - leave - self._count)
        wanted = count(items)
        if wanted > room:
            items, wanted = _first(items, room), room
        if wanted:
            self._items.extend(items)
            self._count += wanted
            self._ready.set()
        return wanted

    def put(self, record: Item, *, leave: int = 0) -> bool:
        return self.put_many((record,), leave=leave) == 1

    def take_nowait(self) -> list[Item]:
        """Everything waiting now (maybe nothing)."""
        out = list(self._items)
        self._items.clear()
        self._count = 0
        if not self._closed:
            self._ready = trio.Event()
        return out

    async def take(self) -> list[Item]:
        """Everything waiting, once something is; ``[]`` once closed and empty."""
        if self._items or self._closed:
            await trio.lowlevel.checkpoint()  # a consumer that never waits still yields
        while not self._items and not self._closed:
            await self._ready.wait()  # a scheduler pass of its own
        return self.take_nowait()

    def close(self) -> None:
        """No more records: the consumer takes what is left, then gets ``[]``."""
        self._closed = True
        self._ready.set()


def _first(items: Sequence[Item], wanted: int) -> list[Item]:
    """The items that stand for the first ``wanted`` records of ``items``."""
    out: list[Item] = []
    for item in items:
        if wanted <= 0:
            break
        if not isinstance(item, EventRun):
            out.append(item)
            wanted -= 1
            continue
        out.append(item if len(item) <= wanted else item.first(wanted))
        wanted -= len(item)
    return out
