"""Events of one task not made yet: a buffer's run of records, kept as its unpacked values.

Where a run of records of one size comes from one task (engine/events/naming.py), every event
of it has the same gadget, map, program, container and origin, and differs only in the
gadget's own fields. ``EventRun`` keeps the run so, and makes the events only when a consumer
asks for them (``events()``, ``runs()``, hooks, ``--filter``): ``engine run --output json``
with nothing else to feed writes their JSON lines straight from the values (``lines``), with
no ``Event`` and no dict. Both are made by code generated once per map (``RunMaker``) from the
decoder's plan, the one statement of how a field is decoded (engine/events/decode.py).

The lines are, byte for byte, what ``json.dumps(event.to_json(), default=str)`` gives
(engine/cli/jsonlines.py, tests/unit/test_jsonlines.py): the constant text (keys, gadget, map,
program) and each task's container and origin are json's own text, made once; per record,
integers are written as json writes them (``int.__repr__``), bools as ``true``/``false``,
strings through json's own escaping (``encode_basestring_ascii``: ASCII only), anything
else (lists) through ``json.dumps``.
"""

from __future__ import annotations

import functools
import json
import json.encoder
import struct
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs

from engine.events.decode import RecordDecoder
from engine.records import Event, Record, new_event

_escape: Callable[[str], str] = json.encoder.encode_basestring_ascii
_STRINGS_KEPT = 4096  # JSON text of strings kept per map (names, paths come again and again)

# Lines made into one string at a time: tens of kB (a whole run's megabyte cost more to
# allocate, twice, than to write).
_LINES_AT_ONCE = 128

Values = Iterable[tuple[Any, ...]]
# A map's generated maker of events: unpacked records' values, their container, their origin.
MakeEvents = Callable[[Values, Mapping[str, Any] | None, Mapping[str, int]], Iterator[Event]]


@attrs.frozen
class Records:
    """Records at a fixed stride: ``layout`` unpacks each one's span of ``spans`` into the
    gadget's fields (without the origin header)."""

    spans: bytes | memoryview
    layout: struct.Struct

    def __len__(self) -> int:
        return len(self.spans) // self.layout.size


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


@attrs.define
class Task:
    """What the events of one task carry: its origin and its container's object; their JSON
    text is made the first time a run of the task's is written."""

    origin: Mapping[str, int]
    container: Mapping[str, Any] | None
    _tail: str | None = attrs.field(default=None, init=False)

    def tail(self) -> str:
        """The end of the task's JSON lines: container, origin, the closing brace."""
        if self._tail is None:
            container = _dumps(None if self.container is None else dict(self.container))
            self._tail = f'}}, "container": {container}, "origin": {_dumps(dict(self.origin))}}}\n'
        return self._tail


@attrs.frozen
class RunMaker:
    """Makes the events and the JSON lines of one map's runs, from its records' values
    unpacked without the origin header (the gadget's fields from index 0)."""

    gadget: str
    source: str
    program: str | None
    decoder: RecordDecoder
    _events: MakeEvents = attrs.field(init=False)
    _lines: Callable[[Values, str], str] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_events", self._event_maker())
        object.__setattr__(self, "_lines", self._line_maker())

    def events(self, values: Values, task: Task) -> Iterator[Event]:
        """The events of unpacked records, each made when the iterator is asked for it."""
        return self._events(values, task.container, task.origin)

    def lines(self, records: Records, task: Task) -> list[bytes]:
        """The JSON lines of the events, in pieces of ``_LINES_AT_ONCE`` records."""
        make, tail, layout = self._lines, task.tail(), records.layout
        spans, step = records.spans, _LINES_AT_ONCE * layout.size
        return [
            make(layout.iter_unpack(spans[i : i + step]), tail).encode()
            for i in range(0, len(spans), step)
        ]

    def _event_maker(self) -> MakeEvents:
        """One generator expression per map, each record's dict display in it (as the
        decoder's builder makes it): ``new_event`` per record and nothing else."""
        data, namespace = self.decoder.dict_display(0)
        namespace.update(
            new=new_event, gadget=self.gadget, source=self.source, program=self.program
        )
        code = (
            "def events(values, container, origin):\n"
            f"    return (new(gadget, source, program, {data}, container, origin)"
            " for v in values)\n"
        )
        exec(compile(code, f"<events of {self.source}>", "exec"), namespace)
        events: MakeEvents = namespace["events"]
        return events

    def _line_maker(self) -> Callable[[Values, str], str]:
        """One f-string per map: the constant text between the values, each value as json
        writes it (see the module's docstring)."""
        values, namespace = self.decoder.value_sources(0)
        zeros = self.decoder.decode(b"")  # each field's value type, as decoding gives it
        head = (
            f'{{"type": "event", "gadget": {_dumps(self.gadget)}, "source": '
            f'{_dumps(self.source)}, "program": {_dumps(self.program)}, "data": {{'
        )
        namespace.update(head=head, booleans=("false", "true"), escape=_escape, dumps=_dumps)
        pieces: list[str] = []
        for i, ((name, value), (_, _, count, _)) in enumerate(
            zip(values, self.decoder.plan, strict=True)
        ):
            namespace[f"k{i}"] = ("" if i == 0 else ", ") + f"{_dumps(name)}: "
            text = _json_text(type(zeros[name]), count, f"c{i}", value, namespace)
            pieces.append(f"{{k{i}}}{{{text}}}")
        body = "".join(pieces)
        code = (
            "def lines(values, tail):\n"
            f'    return "".join([f"{{head}}{body}{{tail}}" for v in values])\n'
        )
        exec(compile(code, f"<JSON lines of {self.source}>", "exec"), namespace)
        lines: Callable[[Values, str], str] = namespace["lines"]
        return lines


def _json_text(kind: type, count: int, convert: str, value: str, namespace: dict[str, Any]) -> str:
    """The expression of the JSON text of a field's ``value`` (an expression of type
    ``kind``, decoded by the converter named ``convert`` if it has one)."""
    if kind is str and count == 1:
        # A string's text, kept by the raw value it is decoded from.
        decode = namespace.pop(convert)
        cached = "s" + convert
        namespace[cached] = functools.lru_cache(maxsize=_STRINGS_KEPT)(
            lambda raw: _escape(decode(raw))
        )
        return cached + value.removeprefix(convert)
    if kind is str:
        return f"escape({value})"
    if kind is bool:
        return f"booleans[{value}]"
    if kind is int:
        return value  # an f-string writes an int as int.__repr__, as json does
    return f"dumps({value})"


@attrs.frozen(eq=False)
class EventRun:
    """Events of one task of one map, not made yet: ``events()`` makes them (the same
    ``Event``s the record path makes), ``lines()`` gives their JSON lines."""

    maker: RunMaker
    records: Records
    task: Task

    def __len__(self) -> int:
        return len(self.records)

    def each(self) -> Iterator[Event]:
        """Its events, each made when asked for: a consumer that drops each before taking
        the next leaves the garbage collector nothing to do (thousands of young events made
        at once cost it a pass every 700)."""
        records = self.records
        return self.maker.events(records.layout.iter_unpack(records.spans), self.task)

    def events(self) -> list[Event]:
        return [*self.each()]

    def lines(self) -> list[bytes]:
        return self.maker.lines(self.records, self.task)

    def first(self, n: int) -> EventRun:
        """The first ``n`` of its events, not made yet."""
        records = self.records
        spans = records.spans[: n * records.layout.size]
        return EventRun(self.maker, Records(spans, records.layout), self.task)


Item = Record | EventRun


def count(items: Iterable[Item]) -> int:
    """The records that ``items`` stand for."""
    return sum(len(i) if isinstance(i, EventRun) else 1 for i in items)


def made(items: Iterable[Item]) -> list[Record]:
    """``items`` with every ``EventRun``'s events made, in order."""
    out: list[Record] = []
    for item in items:
        if isinstance(item, EventRun):
            out += item.events()
        else:
            out.append(item)
    return out


async def each_record(runs: AsyncIterator[Sequence[Item]]) -> AsyncIterator[Record]:
    """The records of ``runs``, one by one (``Engine.events()``): a run's events made as they
    are taken (``EventRun.each``)."""
    async for run in runs:
        for item in run:
            if not isinstance(item, EventRun):
                yield item
                continue
            for event in item.each():
                yield event
