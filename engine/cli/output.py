"""Where ``engine run`` sends records: JSON lines or the live table on stdout, and every
observer beside them (Prometheus metrics, exports), each given the record's JSON as shown
(``--fields`` applied)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from typing import Any, TextIO

import attrs
import trio

from engine.cli import jsonlines
from engine.cli.fields import FieldChoice
from engine.cli.sections import SortKey
from engine.cli.table import HIDE_CURSOR, SHOW_CURSOR, LiveTable
from engine.engine import Engine
from engine.events.runs import count
from engine.records import Record

REFRESH_SECONDS = 0.5


@attrs.define
class Output:
    out: TextIO
    fields: FieldChoice | None = None
    sort: tuple[SortKey, ...] = ()  # how the table orders each section's rows
    observers: list[Callable[[Mapping[str, Any]], None]] = attrs.Factory(list)
    records: int = 0

    def take(self, record: Record) -> dict[str, Any]:
        """The record's JSON as shown, counted and handed to every observer."""
        data = record.to_json()
        if self.fields is not None:
            data = self.fields.pick(data)
        self.records += 1
        for observe in self.observers:
            observe(data)
        return data

    async def write_json(self, engine: Engine) -> None:
        # A run of records (everything waiting) becomes one buffer and one write.
        write = _binary_writer(self.out)
        if self.fields is None and not self.observers:
            async for items in engine.unmade_runs():  # runs' lines without their events
                self.records += count(items)
                write(jsonlines.encode(items))
            return
        async for records in engine.runs():
            # Each record's JSON object is made once, for observers and the line.
            write(jsonlines.encode_shown([self.take(r) for r in records]))

    async def show_table(self, engine: Engine, table: LiveTable) -> None:
        out = self.out
        out.write(HIDE_CURSOR)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._redraw, table)
                async for record in engine.events():
                    table.observe(self.take(record))
                nursery.cancel_scope.cancel()
        finally:
            # The last view stays on screen above the summary line.
            table.draw(out, *terminal_size(out))
            out.write(SHOW_CURSOR)
            out.flush()

    async def _redraw(self, table: LiveTable) -> None:
        while True:
            table.draw(self.out, *terminal_size(self.out))
            await trio.sleep(REFRESH_SECONDS)


def _binary_writer(out: TextIO) -> Callable[[bytes], None]:
    binary = getattr(out, "buffer", None)
    out.flush()

    def write(data: bytes) -> None:
        if binary is None:  # a text-only stream
            out.write(data.decode())
            out.flush()
            return
        binary.write(data)
        binary.flush()

    return write


def terminal_size(out: TextIO) -> tuple[int, int]:
    # The terminal's own size first: COLUMNS/LINES in the environment are often stale.
    try:
        size = os.get_terminal_size(out.fileno())
    except (OSError, ValueError):
        size = shutil.get_terminal_size()
    return size.columns, size.lines
