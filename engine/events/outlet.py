"""The front of the record queue: every record the engine emits goes through ``Outlet``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import attrs

from engine.events.batches import Batch, BatchHub
from engine.events.queue import RecordQueue
from engine.events.runs import Item, count, made
from engine.events.stats import Stats
from engine.records import Event, Lost, Record


class Tap(Protocol):
    """Sees every record, also those the queue refuses (the hooks)."""

    def dispatch(self, record: Record) -> None: ...

    def dispatch_many(self, records: Sequence[Record]) -> None: ...

    def listening(self) -> bool:
        """Whether anything (a hook, a waiter) is there to see records now."""
        ...


@attrs.define
class Outlet:
    """Puts records on the bounded queue; never blocks the kernel readers.

    Buffer events never take the last ``reserve`` places of the queue: those are kept for
    the engine's own records (containers, attachments, losses), so that a flood of events
    cannot crowd them out while the consumer is behind.
    """

    queue: RecordQueue
    stats: Stats
    reserve: int = 0
    pending_lost: dict[tuple[str, str], int] = attrs.Factory(dict)
    # Hooks do not depend on the consumer.
    tap: Tap | None = None
    # The user's --filter: events it refuses reach neither the queue nor the hooks.
    keeps: Callable[[Event], bool] | None = None
    # The ``batches()`` consumers: the maps they want are read as batches, not events.
    batches: BatchHub = attrs.Factory(BatchHub)

    def put(self, record: Record, *, leave: int = 0) -> bool:
        """Queue ``record`` unless fewer than ``leave`` + 1 places are free; a filtered event
        counts as queued."""
        keeps = self.keeps
        if keeps is not None and isinstance(record, Event) and not keeps(record):
            self.stats.for_map(record.gadget, record.source).filtered += 1
            return True
        if self.tap is not None:
            self.tap.dispatch(record)
        return self.queue.put(record, leave=leave)

    def deliver(self, gadget: str, source: str, records: Sequence[Item]) -> None:
        """Queue a batch of one map's events; runs of events not made yet (``EventRun``)
        stay so unless the filter or a hook needs the events now."""
        self._report_lost(gadget, source)
        keeps, tap = self.keeps, self.tap
        listening = tap is not None and tap.listening()
        if keeps is not None or listening:
            events = made(records)
            if keeps is not None:
                kept = [r for r in events if not isinstance(r, Event) or keeps(r)]
                self.stats.for_map(gadget, source).filtered += len(events) - len(kept)
                events = kept
            if tap is not None and listening:
                tap.dispatch_many(events)
            records = events
        delivered = self.queue.put_many(records, leave=self.reserve)
        self._count(gadget, source, delivered, count(records) - delivered)

    def deliver_batch(self, batch: Batch) -> None:
        """Offer ``batch`` to the ``batches()`` consumers; a consumer that is behind loses
        it, counted and reported as for events."""
        self._report_lost(batch.gadget, batch.map)
        if self.batches.offer(batch):
            self._count(batch.gadget, batch.map, len(batch), 0)
        else:
            self._count(batch.gadget, batch.map, 0, len(batch))

    def _report_lost(self, gadget: str, source: str) -> None:
        # Loss reports take half the reserve at most: the other half stays for lifecycle
        # records. A report that does not fit waits, still counting, for the next batch.
        key = (gadget, source)
        if self.pending_lost.get(key) and self.put(
            Lost(gadget, source, self.pending_lost[key], "engine"), leave=self.reserve // 2
        ):
            del self.pending_lost[key]

    def _count(self, gadget: str, source: str, delivered: int, dropped: int) -> None:
        stats = self.stats.for_map(gadget, source)
        stats.delivered += delivered
        if dropped:
            stats.lost_engine += dropped
            key = (gadget, source)
            self.pending_lost[key] = self.pending_lost.get(key, 0) + dropped
