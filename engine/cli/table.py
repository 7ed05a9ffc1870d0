"""The live view of ``engine run`` on a terminal: per-container counts, then the latest events
of each gadget map in a section of its own, a column per field (engine.cli.sections).

The view is built from the records' JSON form (the same contract as ``--output json``), so it
shows every kind of record, also those added later, without knowing their classes. Drawing
uses plain ANSI sequences: cursor home, erase to end of line and of screen.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from typing import Any, TextIO

import attrs

from engine.cli.histogram import map_lines
from engine.cli.sections import Section, SortKey

HOST = "(host)"
HOME = "\x1b[H"
ERASE_LINE = "\x1b[K"
ERASE_BELOW = "\x1b[J"
HIDE_CURSOR = "\x1b[?25l"
SHOW_CURSOR = "\x1b[?25h"
# Column width of container labels in the counts.
_NAME = 32


def container_label(container: Mapping[str, Any] | None) -> str:
    """How a record's container shows in the view: a Kubernetes pod's containers as
    NAMESPACE/POD/CONTAINER (its sandbox as NAMESPACE/POD), any other by its name, else its
    short id; host without a container."""
    if not container:
        return HOST
    k8s = container.get("k8s")
    if isinstance(k8s, Mapping):
        parts = (k8s.get("namespace"), k8s.get("pod"), k8s.get("container"))
        return "/".join(str(p) for p in parts if p)
    return str(container.get("name") or container.get("short_id") or container.get("id") or HOST)


def _note(record: Mapping[str, Any]) -> str | None:
    """One line for the engine's own records; None for gadget events."""
    kind = record.get("type")
    if kind in ("event", "map"):
        return None
    if kind in ("container_added", "container_removed"):
        return f"{kind} {container_label(record.get('container'))}"
    if kind == "lost":
        return f"lost {record.get('count')} from {record.get('source')} ({record.get('where')})"
    if kind == "hook_failed":
        return (
            f"hook {record.get('hook')} failed: {record.get('error_type')}: {record.get('message')}"
        )
    details = " ".join(
        f"{k}={v}" for k, v in record.items() if k != "type" and v is not None and v != ""
    )
    return f"{kind} {details}"


@attrs.define
class ContainerRow:
    name: str
    events: int = 0
    last: float | None = None
    running: bool = True


@attrs.define
class LiveTable:
    """What the view shows; ``observe`` every record, ``render`` whenever it is redrawn."""

    title: str
    clock: Any = time.monotonic
    sort: tuple[SortKey, ...] = ()
    max_rows: int | None = None
    started: float = attrs.field(init=False)
    records: int = 0
    events: int = 0
    lost: int = 0
    rows: dict[str, ContainerRow] = attrs.Factory(dict)
    sections: dict[str, Section] = attrs.Factory(dict)  # "gadget/source" -> its events
    notes: deque[str] = attrs.Factory(lambda: deque(maxlen=5))
    # The latest record of each map, drawn: "gadget/map" -> lines.
    maps: dict[str, list[str]] = attrs.Factory(dict)

    def __attrs_post_init__(self) -> None:
        self.started = self.clock()

    def observe(self, record: Mapping[str, Any]) -> None:
        self.records += 1
        kind = record.get("type")
        if kind == "event":
            self.events += 1
            name = container_label(record.get("container"))
            row = self.rows.setdefault(name, ContainerRow(name))
            row.events += 1
            row.last = self.clock()
            source = f"{record.get('gadget')}/{record.get('source')}"
            section = self.sections.get(source)
            if section is None:
                section = self.sections[source] = Section(source)
            section.add(name, record.get("data") or {})
            return
        if kind == "map":
            self.maps[f"{record.get('gadget')}/{record.get('map')}"] = map_lines(record)
            return
        if kind == "lost":
            self.lost += int(record.get("count") or 0)
        elif kind == "container_added":
            name = container_label(record.get("container"))
            self.rows.setdefault(name, ContainerRow(name)).running = True
        elif kind == "container_removed":
            name = container_label(record.get("container"))
            self.rows.setdefault(name, ContainerRow(name)).running = False
        note = _note(record)
        if note is not None:
            self.notes.append(note)

    def render(self, width: int, height: int) -> list[str]:
        """The view as lines, each at most ``width`` characters, at most ``height`` lines."""
        now = self.clock()
        running = sum(1 for r in self.rows.values() if r.running and r.name != HOST)
        lines = [
            f"engine: {self.title}  {now - self.started:5.1f}s  events {self.events}"
            f"  lost {self.lost}  containers {running}",
            "",
            f"{'CONTAINER':<{_NAME}} {'EVENTS':>8} {'LAST':>7}  STATE",
        ]
        for row in sorted(self.rows.values(), key=lambda r: (-r.events, r.name)):
            last = "-" if row.last is None else f"{now - row.last:5.1f}s"
            state = "running" if row.running else "gone"
            if row.name == HOST:
                state = ""
            lines.append(f"{row.name[:_NAME]:<{_NAME}} {row.events:>8} {last:>7}  {state}")
        for name, drawn in self.maps.items():
            lines += ["", f"MAP {name}", *(drawn or ["(empty)"])]
        room = height - len(lines) - (len(self.notes) + 1 if self.notes else 0)
        sections = list(self.sections.values())
        # Each section takes a blank line, its title and its header, and a share of the rows.
        rows = max((room - 3 * len(sections)) // max(len(sections), 1), 0)
        if self.max_rows is not None:
            rows = min(rows, self.max_rows)
        for section in sections:
            lines += ["", *section.render(width, rows, self.sort)]
        if self.notes:
            lines += ["", *self.notes]
        return [line[:width] for line in lines[:height]]

    def draw(self, out: TextIO, width: int, height: int) -> None:
        """Redraw in place: home, each line erased to its end, then the rest of the screen."""
        body = "".join(f"{line}{ERASE_LINE}\n" for line in self.render(width, height - 1))
        out.write(HOME + body + ERASE_BELOW)
        out.flush()
