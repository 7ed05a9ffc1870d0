"""The records of an engine in this process, as JSON, with ``until(predicate)`` to wait on."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import attrs
import trio

from engine.engine import Engine, open_engine
from tests.support.waiting import Changes

Record = dict[str, Any]
T = TypeVar("T")
LIFECYCLE = ("attached", "detached", "attach_failed")
# How a program's story in one netns ends: refused at once, or attached and then detached.
ENDINGS = (["attach_failed"], ["attached", "detached"])


def lifecycles(records: list[Record], **match: Any) -> dict[str, list[str]]:
    """The attach record types of each program, in order, among records matching ``match``."""
    out: dict[str, list[str]] = {}
    for r in records:
        if r["type"] in LIFECYCLE and all(r.get(k) == v for k, v in match.items()):
            out.setdefault(r["program"], []).append(r["type"])
    return out


def complete(lifecycle: dict[str, list[str]], programs: set[str]) -> bool:
    """Every program ended: attached then detached, or one attach_failed."""
    return set(lifecycle) == programs and all(types in ENDINGS for types in lifecycle.values())


def unpaired(records: list[Record]) -> Counter[tuple[Any, ...]]:
    """Per-netns ``attached`` records without their ``detached``, and the other way round (by
    program, netns and interface): empty once every attachment has ended."""
    key = ("program", "netns", "interface")

    def of(kind: str) -> Counter[tuple[Any, ...]]:
        return Counter(
            tuple(r[k] for k in key)
            for r in records
            if r.get("type") == kind and r.get("netns") is not None
        )

    attached, detached = of("attached"), of("detached")
    return (attached - detached) + (detached - attached)


async def first(
    records: AsyncIterable[object],
    kind: type[T],
    where: Callable[[T], bool] = lambda _: True,
    *,
    before: list[object] | None = None,
) -> T:
    """The first of `records` that is a `kind` and matches `where`; those read before it are
    appended to `before`."""
    async for record in records:
        if isinstance(record, kind) and where(record):
            return record
        if before is not None:
            before.append(record)
    raise AssertionError(f"the records ended with no {kind.__name__}")


@attrs.define
class Recorder(Changes):
    """Every record of one engine, in order. With ``keep_events=False`` gadget events are only
    counted, so that a long run keeps the test's memory flat."""

    records: list[Record] = attrs.Factory(list)
    events_seen: int = 0
    keep_events: bool = True

    async def follow(self, eng: Engine) -> None:
        async for record in eng.events():
            json = record.to_json()
            if json["type"] == "event":
                self.events_seen += 1
                if not self.keep_events:
                    continue
            self.records.append(json)
            self.changed()
        self.ended()

    def describe(self) -> str:
        last = [r for r in self.records if r["type"] != "event"][-8:]
        return f"{len(self.records)} records, the last lifecycle ones: {last}"

    def of_type(self, kind: str) -> list[Record]:
        return [r for r in self.records if r["type"] == kind]

    def events(self, source: str | None = None) -> list[Record]:
        return [r for r in self.of_type("event") if source is None or r["source"] == source]

    def attached_programs(self, **match: Any) -> set[str]:
        """The programs attached, per the records matching ``match`` (container=, netns=)."""
        return {
            r["program"]
            for r in self.of_type("attached")
            if all(r.get(k) == v for k, v in match.items())
        }

    def lifecycles(self, **match: Any) -> dict[str, list[str]]:
        return lifecycles(self.records, **match)


@asynccontextmanager
async def recording(eng: Engine, *, keep_events: bool = True) -> AsyncIterator[Recorder]:
    """The engine's records while the block runs. Leaving the block stops the engine and
    waits for its last records (the detaches), so that they are there after it."""
    recorder = Recorder(keep_events=keep_events)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(recorder.follow, eng)
        try:
            yield recorder
        finally:
            eng.stop()


@asynccontextmanager
async def recorded(*gadgets: Any, **options: Any) -> AsyncIterator[tuple[Engine, Recorder]]:
    """``open_engine(*gadgets, **options)`` and its records (``recording``), in one block."""
    async with open_engine(*gadgets, **options) as eng, recording(eng) as rec:
        yield eng, rec
