"""The JSON lines ``engine run --output json`` writes, encoded many records per call.

The contract is the text ``json.dumps(record.to_json(), default=str)`` gives, byte for byte:
keys in field order, ``", "`` and ``": "`` between items, ASCII only (``\\uXXXX`` escapes).
Users' scripts grep it, so a faster encoder must not change a byte of it.

Events are nearly every line and hold only what the decoder, the world and the origin make:
ints, bools, None, strs, lists of ints, and the container's object (strs, ints, bools, None,
dicts of strs). A run of them goes through msgspec in one call, as one JSON array: msgspec's
formatter (``indent=0``) puts in json's separators, and the array splits into lines where one
event ends and the next begins (``}, {"type": "event", ``: a ``{"`` pair never occurs inside a
JSON string, whose quotes are escaped, and no event holds a list of objects). What msgspec
would write otherwise (non-ASCII or DEL characters, which json escapes; an integer over 64
bits or a lone surrogate, which it refuses) sends that run through json, record by record.
The engine's own records are few and go through json directly. A run of one task's events
not made yet (``EventRun``, engine/events/runs.py) writes its own lines, from its values,
without events.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from engine.events.runs import EventRun, Item
from engine.records import Event, Record

_ENCODER = msgspec.json.Encoder()
_BETWEEN = b'}, {"type": "event", '
_NEWLINE_BETWEEN = b'}\n{"type": "event", '


def json_line(record: Record) -> bytes:
    """One record's line, newline included, the reference encoding."""
    return (json.dumps(record.to_json(), default=str) + "\n").encode()


class _EventLine(msgspec.Struct, tag_field="type", tag="event"):
    """Event.to_json's keys in its order, without its copies: made, encoded and dropped (a
    msgspec Struct encodes faster than a dict)."""

    gadget: str
    source: str
    program: str | None
    data: Any
    container: Any
    origin: Any


def _run(items: Sequence[Any], fallback: Iterable[bytes], parts: list[bytes | memoryview]) -> None:
    """A run of events (``_EventLine``s or their JSON objects) in one msgspec call; where
    msgspec would write otherwise than json, ``fallback`` (their lines through json)."""
    try:
        text = msgspec.json.format(_ENCODER.encode(items), indent=0)
    # UnicodeEncodeError: a lone surrogate (os.fsdecode's), which json escapes.
    except (TypeError, OverflowError, UnicodeEncodeError, msgspec.EncodeError):
        parts += fallback
        return
    if not text.isascii() or b"\x7f" in text:
        parts += fallback
        return
    # Without the array's brackets, uncopied: the final join copies once.
    parts += (memoryview(text.replace(_BETWEEN, _NEWLINE_BETWEEN))[1:-1], b"\n")


def _events(events: Sequence[Event], parts: list[bytes | memoryview]) -> None:
    lines = [
        _EventLine(e.gadget, e.source, e.program, e.data, e.container, e.origin) for e in events
    ]
    _run(lines, (json_line(e) for e in events), parts)


def _object_line(shown: Mapping[str, Any]) -> bytes:
    return (json.dumps(shown, default=str) + "\n").encode()


def encode_shown(shown: Sequence[Mapping[str, Any]]) -> bytes:
    """``encode`` of records whose JSON objects are already made (``--fields`` applied, or
    made for observers): the same bytes as json gives them, events a run at a time."""
    parts: list[bytes | memoryview] = []
    run: list[Mapping[str, Any]] = []
    for item in shown:
        if item.get("type") == "event":
            run.append(item)
            continue
        if run:
            _run(run, map(_object_line, run), parts)
            run = []
        parts.append(_object_line(item))
    if run:
        _run(run, map(_object_line, run), parts)
    return b"".join(parts)


def encode(records: Sequence[Item]) -> bytes:
    """The lines of ``records``, in order, as one buffer to write; an ``EventRun``'s are
    written from its values (engine/events/runs.py), without its events."""
    parts: list[bytes | memoryview] = []
    run: list[Event] = []
    for record in records:
        if isinstance(record, Event):
            run.append(record)
            continue
        if run:
            _events(run, parts)
            run = []
        if isinstance(record, EventRun):
            parts += record.lines()
        else:
            parts.append(json_line(record))
    if run:
        _events(run, parts)
    return b"".join(parts)
