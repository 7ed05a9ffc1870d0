"""The live table's events: one section per gadget map, a column per field of its records.

Each section keeps the latest ``KEPT`` events of its map; ``--sort FIELD[,FIELD]`` orders
them (``-FIELD`` descending), else the newest come last; ``--max-rows N`` caps the rows each
section shows. Sort keys a map's records do not have are ignored in its section. Columns are
as wide as what they show, narrowed (the widest data column first, the container's last)
until the row fits the terminal; a cell that does not fit is cut with ``…``.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from engine.errors import SortError
from engine.events.filter import fields_text, record_types
from engine.gadget.model import Gadget

KEPT = 200
_CONTAINER = "CONTAINER"
_NARROWEST = 6
_GAP = 1


@attrs.frozen
class SortKey:
    field: str
    descending: bool


def parse_sort(
    text: str | None, gadgets: Iterable[Gadget], *, padding: bool = False
) -> tuple[SortKey, ...]:
    """``--sort`` as keys, checked against the gadgets' record structs; raises SortError."""
    if text is None:
        return ()
    keys = []
    for part in text.split(","):
        name = part.strip()
        descending = name.startswith("-")
        name = name.removeprefix("-").strip()
        if not name:
            raise SortError(text, "is not a comma-separated list of fields (-FIELD: descending)")
        keys.append(SortKey(name, descending))
    layouts = record_types(gadgets, padding=padding)
    if all(fields is not None for fields in layouts.values()):
        known = {name for fields in layouts.values() if fields for name in fields}
        unknown = [k.field for k in keys if k.field not in known]
        if unknown:
            raise SortError(
                text, f"no field {', '.join(map(repr, unknown))}; {fields_text(layouts)}"
            )
    return tuple(keys)


def cell(value: Any) -> str:
    """A value as a person reads it: text as is, numbers plainly, anything else as JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return "-"
    if isinstance(value, bool | int | float):
        return str(value).lower() if isinstance(value, bool) else str(value)
    return json.dumps(value, separators=(",", ":"))


@attrs.define
class Section:
    """One gadget map's latest events, as (container label, data) pairs."""

    name: str
    rows: deque[tuple[str, Mapping[str, Any]]] = attrs.Factory(lambda: deque(maxlen=KEPT))
    columns: list[str] = attrs.Factory(list)
    count: int = 0

    def add(self, container: str, data: Mapping[str, Any]) -> None:
        self.count += 1
        self.rows.append((container, data))
        self.columns += [k for k in data if k not in self.columns]

    def ordered(self, sort: Sequence[SortKey]) -> list[tuple[str, Mapping[str, Any]]]:
        rows = list(self.rows)
        # One stable pass per key, the last key first: the first key decides, ties fall back.
        for key in reversed(sort):
            rows.sort(key=lambda row: _order(row[1].get(key.field)), reverse=key.descending)
        return rows

    def render(self, width: int, rows: int, sort: Sequence[SortKey]) -> list[str]:
        """Title, header and at most ``rows`` rows, each at most ``width`` characters."""
        sort = [k for k in sort if k.field in self.columns]  # keys of other maps: not here
        ordered = self.ordered(sort)
        # Sorted: the first rows; else the newest, which come last.
        shown = ordered[:rows] if sort or not rows else ordered[-rows:]
        table = [[_CONTAINER, *(c.upper() for c in self.columns)]]
        table += [[label, *(cell(data.get(c)) for c in self.columns)] for label, data in shown]
        widths = _fit([max(len(r[i]) for r in table) for i in range(len(table[0]))], width)
        title = f"{self.name}  {self.count} events"
        if sort:
            title += "  sorted by " + ",".join(
                ("-" if k.descending else "") + k.field for k in sort
            )
        return [title, *(_line(r, widths)[:width] for r in table)]


def _order(value: Any) -> tuple[int, Any]:
    # Absent values last; numbers and text never compared with each other.
    if value is None:
        return (2, 0)
    if isinstance(value, int | float):
        return (0, value)
    return (1, cell(value))


def _fit(natural: list[int], width: int) -> list[int]:
    widths = list(natural)
    while sum(widths) + _GAP * (len(widths) - 1) > width:
        # The data columns give way first, widest first: the container's name goes last.
        narrowable = [i for i in range(1, len(widths)) if widths[i] > _NARROWEST] or [0]
        widest = max(narrowable, key=lambda i: widths[i])
        if widths[widest] <= _NARROWEST:
            break  # too many columns: the line is cut at the terminal's edge
        widths[widest] -= 1
    return widths


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    out = []
    for text, w in zip(cells, widths, strict=True):
        out.append(text if len(text) <= w else text[: w - 1] + "\u2026")
    return " ".join(f"{text:<{w}}" for text, w in zip(out, widths, strict=True)).rstrip()
