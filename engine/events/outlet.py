"""The front of the record channel: every record the engine emits goes through ``Outlet``."""

from __future__ import annotations

from collections.abc import Callable

import attrs
import trio

from engine.events.stats import Stats
from engine.records import Event, Lost, Record


@attrs.define
class Outlet:
    """Puts records on the bounded channel; never blocks the kernel readers.

    Buffer events never take the last ``reserve`` places of the channel: those are kept for
    the engine's own records (containers, attachments, losses), so that a flood of events
    cannot crowd them out while the consumer is behind.
    """

    send: trio.MemorySendChannel[Record]
    stats: Stats
    reserve: int = 0
    pending_lost: dict[tuple[str, str], int] = attrs.Factory(dict)
    # Sees every record, also those the channel refuses: hooks do not depend on the consumer.
    tap: Callable[[Record], None] | None = None
    # The user's --filter: events it refuses reach neither the channel nor the hooks.
    keeps: Callable[[Event], bool] | None = None

    def put(self, record: Record, *, leave: int = 0) -> bool:
        """Send ``record`` unless fewer than ``leave`` + 1 places are free; a filtered event
        counts as sent."""
        keeps = self.keeps
        if keeps is not None and isinstance(record, Event) and not keeps(record):
            self.stats.for_map(record.gadget, record.source).filtered += 1
            return True
        return self._send(record, leave)

    def _send(self, record: Record, leave: int) -> bool:
        if self.tap is not None:
            self.tap(record)
        if leave:
            used = self.send.statistics()
            if used.current_buffer_used + leave >= used.max_buffer_size:
                return False
        try:
            self.send.send_nowait(record)
        except trio.WouldBlock:
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    def deliver(self, gadget: str, source: str, records: list[Record]) -> None:
        stats = self.stats.for_map(gadget, source)
        key = (gadget, source)
        # Loss reports take half the reserve at most: the other half stays for lifecycle
        # records. A report that does not fit waits, still counting, for the next batch.
        if self.pending_lost.get(key) and self.put(
            Lost(gadget, source, self.pending_lost[key], "engine"), leave=self.reserve // 2
        ):
            del self.pending_lost[key]
        keeps = self.keeps
        if keeps is not None:
            kept = [r for r in records if not isinstance(r, Event) or keeps(r)]
            stats.filtered += len(records) - len(kept)
            records = kept
        dropped = 0
        for record in records:
            if self._send(record, self.reserve):
                stats.delivered += 1
            else:
                dropped += 1
        if dropped:
            stats.lost_engine += dropped
            self.pending_lost[key] = self.pending_lost.get(key, 0) + dropped
