"""The bounded queue of records between the engine and ``events()``, taken a run at a time.

A trio memory channel costs a scheduler pass per ``receive()`` and a method call per record on
both ends; the pump writes a whole batch at once and the consumer can read everything that
waits at once, so the queue hands over runs: ``put_many`` appends what fits, ``take`` waits
until something is there and returns all of it (one scheduler pass per run, not per record).
The bound is in records, as the channel's was.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

import attrs
import trio

from engine.records import Record


@attrs.define
class RecordQueue:
    """At most ``size`` records; ``close()`` ends the consumer once it has taken the rest."""

    size: int
    _records: collections.deque[Record] = attrs.Factory(collections.deque)
    _ready: trio.Event = attrs.Factory(trio.Event)
    _closed: bool = False

    def __len__(self) -> int:
        return len(self._records)

    def free(self) -> int:
        return self.size - len(self._records)

    def put_many(self, records: Sequence[Record], *, leave: int = 0) -> int:
        """Append as many of ``records`` (from the first) as leave ``leave`` places free;
        how many were appended."""
        if self._closed:
            return 0
        room = max(0, self.size - leave - len(self._records))
        taken = records if len(records) <= room else records[:room]
        if taken:
            self._records.extend(taken)
            self._ready.set()
        return len(taken)

    def put(self, record: Record, *, leave: int = 0) -> bool:
        return self.put_many((record,), leave=leave) == 1

    def take_nowait(self) -> list[Record]:
        """Everything waiting now (maybe nothing)."""
        out = list(self._records)
        self._records.clear()
        if not self._closed:
            self._ready = trio.Event()
        return out

    async def take(self) -> list[Record]:
        """Everything waiting, once something is; ``[]`` once closed and empty."""
        if self._records or self._closed:
            await trio.lowlevel.checkpoint()  # a consumer that never waits still yields
        while not self._records and not self._closed:
            await self._ready.wait()  # a scheduler pass of its own
        return self.take_nowait()

    def close(self) -> None:
        """No more records: the consumer takes what is left, then gets ``[]``."""
        self._closed = True
        self._ready.set()
