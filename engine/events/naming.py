"""One buffer map's raw records turned into named events, a batch at a time.

The origin header (engine/events/origin.py) and the gadget's struct behind it are unpacked in
one call, and the record's dict is made by the decoder's generated builder. The common case is
decided here without an ``Origin`` object: a task's record while the selection keeps every
task, whose container is its mount namespace's, else its cgroup's, else the one the gadget's
own fields name (``World.container_for``; skipped when the struct has none of those fields).
Its ``origin`` object is shared by the records of one task. In a buffer's run of records of
one size, consecutive records of one task whose container is the task's (the struct names
none) have their fields left unpacked: they stay one ``EventRun`` (engine/events/runs.py),
made into events only when a consumer asks. Everything else (packets, the kernel's own
records, a selection that filters tasks, a short record) goes through ``place``
(engine/world/placement.py), the one statement of the rules; tests/unit/test_naming.py checks
that both ways agree.
"""

from __future__ import annotations

import functools
import itertools
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs
import numpy as np

from engine.bcc.origin_prelude import ORIGIN_TASK
from engine.events.decode import RecordDecoder
from engine.events.origin import FORMAT, HEADER, Origin
from engine.events.ringbuf import RecordRun
from engine.events.runs import EventRun, Item, Records, RunMaker, Task
from engine.events.stats import MapStats
from engine.records import Event, Record, new_event
from engine.world.held import Held
from engine.world.placement import place
from engine.world.state import Verdict, World

# The fields ``World.container_for`` reads: a struct without any of them names no container.
_NAMING_FIELDS = frozenset({"mntns_id", "mntns", "netns_id", "netns", "ifindex", "cgroup_id"})
# Task origins kept for reuse; a flood of many short-lived tasks starts the cache afresh.
_ORIGINS_KEPT = 4096
# Values 0-5 of the unpacked header: kind, tgid, mntns, netns, cgroup, ifindex (then flags).
_KIND, _TGID, _MNTNS, _NETNS, _CGROUP = range(5)
_FIRST = len(struct.Struct(FORMAT).unpack(bytes(HEADER)))
# Each record's task in a run: kind and tgid, mntns and netns, cgroup, as three u64 columns.
_TASK_COLUMNS = (0, 8, 16)


@attrs.define
class MapNamer:
    """Names the records of one ring or perf buffer map of one gadget."""

    gadget: str
    source: str
    program: str | None
    decoder: RecordDecoder
    world: World
    _size: int = attrs.field(init=False)
    _format: str = attrs.field(init=False)  # of the origin header and the struct, no "<"
    _unpack: Callable[[bytes], tuple[Any, ...]] = attrs.field(init=False)
    # Per record layout of a run (what is skipped, the buffer's header size, the stride).
    _layouts: dict[tuple[str, int, int], struct.Struct] = attrs.Factory(dict)
    _build: Callable[[tuple[Any, ...]], dict[str, Any]] = attrs.field(init=False)
    reads_fields: bool = attrs.field(init=False)  # the struct has a field naming a container
    # Per task (tgid, mntns, netns, cgroup): its origin object and its container's object.
    _origins: dict[tuple[int, ...], Task] = attrs.Factory(dict)
    _runs: RunMaker = attrs.field(init=False)
    _generation: int = -1  # the world's, when _origins was filled

    def __attrs_post_init__(self) -> None:
        self._format = FORMAT.lstrip("<") + self.decoder.struct.format.lstrip("<")
        whole = struct.Struct("<" + self._format)
        self._size = whole.size
        self._unpack = whole.unpack_from
        self._build = self.decoder.builder(_FIRST)
        self.reads_fields = any(f.name in _NAMING_FIELDS for f in self.decoder.fields)
        self._runs = RunMaker(self.gadget, self.source, self.program, self.decoder)

    def name(self, batch: list[bytes], now: float, held: Held, stats: MapStats) -> list[Record]:
        """The events of ``batch`` that reach consumers now; held ones go to ``held``,
        unselected ones are counted in ``stats``."""
        if self.world.filters_tasks:
            return self._placed(batch, now, held, stats)
        size, unpack = self._size, self._unpack
        values = [unpack(raw) if len(raw) >= size else None for raw in batch]
        return self._named(values, batch.__getitem__, now, held, stats)

    def name_run(self, run: RecordRun, now: float, held: Held, stats: MapStats) -> Sequence[Item]:
        """``name`` for a buffer's run of records of one size (``RingReader.read_run``,
        ``PerfReader.read_run``), unpacked in one pass over its bytes: no slice per record.
        Consecutive records of one task whose container is the task's become one
        ``EventRun`` (engine/events/runs.py): their events are made when a consumer asks."""
        blob, skip, count, length = run.data, run.skip, run.count, run.length
        stride = len(blob) // count

        def raw(i: int) -> bytes:
            return blob[i * stride + skip : i * stride + skip + length]

        # A short record's missing fields are zeros (``name``), not its span's padding.
        if self.world.filters_tasks or length < self._size:
            return self.name([raw(i) for i in range(count)], now, held, stats)
        whole = self._layout(f"{skip}x", skip, stride, self._format)
        if self.reads_fields:
            return self._named(whole.iter_unpack(blob), raw, now, held, stats)
        self._refresh()
        body = self._layout(f"{skip + HEADER}x", skip, stride, self.decoder.struct.format[1:])
        view = memoryview(blob)
        out: list[Item] = []
        for lo, hi in _task_spans(blob, skip, stride, count):
            part = view[lo * stride : hi * stride]
            v = whole.unpack_from(part)
            if v[_KIND] != ORIGIN_TASK:
                part_raw = functools.partial(_shifted, raw, lo)
                out += self._named(whole.iter_unpack(part), part_raw, now, held, stats)
                continue
            task = self._origins.get(v[_TGID : _CGROUP + 1]) or self._task(v)
            out.append(EventRun(self._runs, Records(part, body), task))
        return out

    def _layout(self, lead: str, skip: int, stride: int, fields: str) -> struct.Struct:
        """The struct of one record's span in a run: ``lead`` skipped, ``fields``, then the
        rest of the ``stride`` (kept per layout)."""
        key = (lead, skip, stride)
        layout = self._layouts.get(key)
        if layout is None:
            tail = stride - skip - self._size
            layout = self._layouts[key] = struct.Struct(f"<{lead}{fields}{tail}x")
        return layout

    def _refresh(self) -> None:
        """Forget the tasks' containers once containers came or went."""
        if self._generation != self.world.generation:
            self._generation = self.world.generation
            self._origins.clear()

    def _named(
        self,
        values: Iterable[tuple[Any, ...] | None],
        raw: Callable[[int], bytes],
        now: float,
        held: Held,
        stats: MapStats,
    ) -> list[Record]:
        """The events of unpacked records (None: too short to unpack); ``raw(i)`` is the
        ``i``-th record's bytes, for those that go through ``place``."""
        world = self.world
        gadget, source, program = self.gadget, self.source, self.program
        build, origins = self._build, self._origins
        out: list[Record] = []
        self._refresh()
        for i, v in enumerate(values):
            if v is None or v[_KIND] != ORIGIN_TASK:
                out += self._placed([raw(i)], now, held, stats)
                continue
            data = build(v)
            task = origins.get(v[_TGID : _CGROUP + 1])
            if task is None:
                task = self._task(v)
            container = task.container
            if container is None and self.reads_fields:
                found = world.container_for(data)
                container = None if found is None else world.container_json(found)
            out.append(new_event(gadget, source, program, data, container, task.origin))
        return out

    def _task(self, v: tuple[Any, ...]) -> Task:
        """A task's origin object and its container's (by mount namespace, else cgroup),
        kept for the task's next records."""
        world, origins = self.world, self._origins
        container = world.find("mntns_inode", v[_MNTNS])
        if container is None and v[_CGROUP] > 1:  # 1: the v2 root (placement.py)
            container = world.find("cgroup_id", v[_CGROUP])
        if len(origins) >= _ORIGINS_KEPT:
            origins.clear()
        origin = {"mntns": v[_MNTNS], "netns": v[_NETNS], "cgroup": v[_CGROUP], "tgid": v[_TGID]}
        task = origins[v[_TGID : _CGROUP + 1]] = Task(
            origin, None if container is None else world.container_json(container)
        )
        return task

    def _placed(self, batch: list[bytes], now: float, held: Held, stats: MapStats) -> list[Record]:
        out: list[Record] = []
        for raw in batch:
            verdict, key, event = self.place_one(raw, now)
            if verdict is Verdict.DROP:
                stats.unselected += 1
            elif verdict is Verdict.HOLD:
                held.hold_event(key, event)
            else:
                out.append(event)
        return out

    def place_one(self, raw: bytes, now: float) -> tuple[Verdict, int, Event]:
        """One record through ``place``: the verdict, the key it is held under, the event."""
        world = self.world
        origin = Origin.of(raw)
        data = self.decoder.decode(raw, HEADER)
        verdict, key, container = place(world, origin, data, now)
        event = Event(
            self.gadget,
            self.source,
            self.program,
            data,
            None if container is None else world.container_json(container),
            origin.to_json(world.host_netns, world.host_ifindexes),
        )
        return verdict, key, event


def _shifted(raw: Callable[[int], bytes], first: int, i: int) -> bytes:
    return raw(first + i)


def _task_spans(blob: bytes, skip: int, stride: int, count: int) -> list[tuple[int, int]]:
    """Where a run's consecutive records come from one task (the same kind, tgid, mount
    namespace, netns and cgroup): (first, end) pairs, found on the run's bytes at once."""
    columns = np.ndarray(
        (count,),
        np.dtype(
            {
                "names": ["a", "b", "c"],
                "formats": ["<u8"] * 3,
                "offsets": [skip + at for at in _TASK_COLUMNS],
                "itemsize": stride,
            }
        ),
        blob,
    )
    changed = np.zeros(count - 1, bool)
    for name in ("a", "b", "c"):
        column = columns[name]
        changed |= column[1:] != column[:-1]
    starts = [0, *(np.flatnonzero(changed) + 1).tolist(), count]
    return list(itertools.pairwise(starts))
