"""Columnar batches of a buffer map's records: what ``Engine.batches()`` yields.

numpy structured arrays, because a gadget's record is a fixed-size C struct: one dtype with the
struct's field offsets (from the decoder, engine/events/decode.py) views a run of records as
columns, and a run of ring buffer records is one contiguous slice at a fixed stride (the data
area is mapped twice, engine/events/ringbuf.py). So a batch costs one copy of the run and no
Python step per record. Arrow would copy each column into its own layout and bring a large
dependency for what a dtype already says; numpy is what analysis code already speaks.

Each row's container is found by vectorised lookups: the distinct mount namespaces (then
cgroups) of the batch's task records are looked up once each (``World.find``), and every row
gets the index of its container in ``Batch.containers`` (-1: none). The rows the fast rules do
not decide (packets, the kernel's own records, records whose own fields may name a container,
a selection that filters tasks) go through ``place`` (engine/world/placement.py) one by one,
as ``events()`` does: dropped rows leave the batch, held ones become events held for their
namespace (they reach ``events()`` when it is identified).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt
import trio

from engine.bcc.origin_prelude import ORIGIN_TASK
from engine.events.naming import MapNamer
from engine.events.origin import HEADER
from engine.events.ringbuf import RecordRun
from engine.events.stats import MapStats
from engine.world.held import Held
from engine.world.state import Verdict

_ORIGIN_COLUMNS = (
    ("kind", 0, "<u4", 1),
    ("tgid", 4, "<u4", 1),
    ("mntns", 8, "<u4", 1),
    ("netns", 12, "<u4", 1),
    ("cgroup", 16, "<u8", 1),
    ("ifindex", 24, "<u4", 1),
)


@attrs.frozen(eq=False)
class Batch:
    """Records of one buffer map of one gadget, as columns (numpy structured arrays).

    ``fields``: the gadget's struct, a column per field (numbers as the C type says, in the
    host's order; ``__be*`` fields as numbers, as ``events()`` gives them; ``char[N]`` as
    bytes; 128-bit fields as 16 raw bytes). ``origin``: ``kind`` (1 task, 2 packet, 3 the
    kernel), ``tgid``, ``mntns``, ``netns``, ``cgroup``, ``ifindex``, as the kernel wrote
    them. ``container``: per row, the index of its container's object in ``containers``
    (the objects ``events()`` gives as ``Event.container``), -1 for none.
    """

    gadget: str
    map: str
    fields: npt.NDArray[Any]
    origin: npt.NDArray[Any]
    container: npt.NDArray[np.int32]
    containers: tuple[Mapping[str, Any], ...]

    def __len__(self) -> int:
        return len(self.fields)

    def container_of(self, row: int) -> Mapping[str, Any] | None:
        """The container object of ``row``, None for none."""
        index = int(self.container[row])
        return None if index < 0 else self.containers[index]


def _dtype(columns: Sequence[tuple[str, int, str, int]], skip: int, itemsize: int) -> np.dtype[Any]:
    return np.dtype(
        {
            "names": [name for name, *_ in columns],
            "formats": [kind if count == 1 else (kind, count) for _, _, kind, count in columns],
            "offsets": [skip + offset for _, offset, _, _ in columns],
            "itemsize": itemsize,
        }
    )


@attrs.define
class BatchMaker:
    """Makes the batches of one map, from a run of records or a list of raw records; the
    rows the fast rules do not decide go through its ``MapNamer``'s ``place_one``."""

    namer: MapNamer
    # The dtypes of each record layout seen (a buffer's header size, the stride): made once.
    _layouts: dict[tuple[int, int], tuple[np.dtype[Any], np.dtype[Any]]] = attrs.Factory(dict)

    def _dtypes(self, skip: int, stride: int) -> tuple[np.dtype[Any], np.dtype[Any]]:
        found = self._layouts.get((skip, stride))
        if found is None:
            found = self._layouts[skip, stride] = (
                _dtype(self.namer.decoder.columns, skip + HEADER, stride),
                _dtype(_ORIGIN_COLUMNS, skip, stride),
            )
        return found

    @property
    def size(self) -> int:
        """The raw record's size: the origin header and the struct."""
        return HEADER + self.namer.decoder.struct.size

    def from_run(self, run: RecordRun, now: float, held: Held, stats: MapStats) -> Batch | None:
        """A buffer's run of records of one size (``RingReader.read_run``,
        ``PerfReader.read_run``). None when every row was dropped or held."""
        blob, skip, length = run.data, run.skip, run.length
        stride = len(blob) // run.count
        if length < self.size:  # short records: padded with zeros one by one, not the span's
            records = [
                blob[i * stride + skip : i * stride + skip + length] for i in range(run.count)
            ]
            return self.from_records(records, now, held, stats)
        return self._batch(blob, skip, stride, now=now, held=held, stats=stats)

    def from_records(
        self, records: list[bytes], now: float, held: Held, stats: MapStats
    ) -> Batch | None:
        """Raw records (a perf buffer's, or a ring's that are not one run)."""
        stride = max(self.size, *(len(r) for r in records))
        if any(len(r) != stride for r in records):
            records = [r.ljust(stride, b"\0") for r in records]
        return self._batch(b"".join(records), 0, stride, now=now, held=held, stats=stats)

    def _batch(
        self, blob: bytes, skip: int, stride: int, *, now: float, held: Held, stats: MapStats
    ) -> Batch | None:
        namer = self.namer
        field_type, origin_type = self._dtypes(skip, stride)
        fields = np.frombuffer(blob, field_type)
        origin = np.frombuffer(blob, origin_type)
        containers: list[Mapping[str, Any]] = []
        index = self._by_namespace(origin, containers)
        world = namer.world
        task = origin["kind"] == ORIGIN_TASK
        slow = ~task if not world.filters_tasks else np.ones(len(origin), bool)
        if namer.reads_fields:
            slow |= index < 0
        if slow.any():
            keep = np.ones(len(origin), bool)
            for row in np.flatnonzero(slow).tolist():
                raw = blob[row * stride + skip : (row + 1) * stride]
                verdict, key, event = namer.place_one(raw, now)
                keep[row] = verdict is Verdict.DELIVER
                if verdict is Verdict.DROP:
                    stats.unselected += 1
                elif verdict is Verdict.HOLD:
                    held.hold_event(key, event)
                index[row] = _position(containers, event.container)
            dropped = len(keep) - int(keep.sum())
            if dropped:
                fields, origin, index = fields[keep], origin[keep], index[keep]
        if not len(fields):
            return None
        for column in (fields, origin, index):
            column.flags.writeable = False  # one batch is shared by every consumer
        return Batch(
            namer.gadget,
            namer.source,
            fields,
            origin,
            index,
            tuple(containers),
        )

    def _by_namespace(
        self, origin: npt.NDArray[Any], containers: list[Mapping[str, Any]]
    ) -> npt.NDArray[np.int32]:
        """Each task row's container by mount namespace, else by cgroup (above the v2 root,
        placement.py): one lookup per distinct value, not per row."""
        index = np.full(len(origin), -1, np.int32)
        task = origin["kind"] == ORIGIN_TASK
        self._look_up(origin, "mntns", task, index, containers)
        by_cgroup = task & (index < 0) & (origin["cgroup"] > 1)
        self._look_up(origin, "cgroup", by_cgroup, index, containers)
        return index

    def _look_up(
        self,
        origin: npt.NDArray[Any],
        column: str,
        rows: npt.NDArray[np.bool_],
        index: npt.NDArray[np.int32],
        containers: list[Mapping[str, Any]],
    ) -> None:
        if not rows.any():
            return
        attribute = {"mntns": "mntns_inode", "cgroup": "cgroup_id"}[column]
        values, inverse = np.unique(origin[column][rows], return_inverse=True)
        find, container_json = self.namer.world.find, self.namer.world.container_json
        found = []
        for value in values.tolist():
            container = find(attribute, int(value))
            found.append(
                _position(containers, None if container is None else container_json(container))
            )
        index[rows] = np.array(found, np.int32)[inverse]


def _position(containers: list[Mapping[str, Any]], container: Mapping[str, Any] | None) -> int:
    """``container``'s index in ``containers`` (added if new); -1 for none. Containers are
    the world's shared objects: the same container is the same object."""
    if container is None:
        return -1
    for i, c in enumerate(containers):
        if c is container:
            return i
    containers.append(container)
    return len(containers) - 1


@attrs.define(eq=False)
class _Sink:
    map: str | None
    send: trio.MemorySendChannel[Batch]


@attrs.define(eq=False)
class BatchStream:
    """What ``Engine.batches()`` returns: registered as soon as it is made (the batches of
    records read from then on are its), an async iterator of ``Batch`` that ends when the
    engine stops, and an async context manager that unregisters it on leaving (or ``aclose``;
    else when it is garbage)."""

    _hub: BatchHub
    _sink: _Sink
    _receive: trio.MemoryReceiveChannel[Batch]

    def __aiter__(self) -> BatchStream:
        return self

    async def __anext__(self) -> Batch:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            self.close()
            raise StopAsyncIteration from None

    async def __aenter__(self) -> BatchStream:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        """Unregister: the maps go back to ``events()`` when no other stream wants them."""
        self._hub.remove(self._sink)
        self._receive.close()

    def __del__(self) -> None:
        self._hub.remove(self._sink)


@attrs.define
class BatchHub:
    """The ``batches()`` consumers; the maps they ask for are read as batches instead of
    events, each batch offered to each of them without blocking."""

    size: int = 16  # batches waiting per consumer before the next ones are dropped
    _sinks: list[_Sink] = attrs.Factory(list)

    def add(self, map_name: str | None) -> BatchStream:
        send, receive = trio.open_memory_channel[Batch](self.size)
        sink = _Sink(map_name, send)
        self._sinks.append(sink)
        return BatchStream(self, sink, receive)

    def remove(self, sink: _Sink) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)
            sink.send.close()

    def wants(self, map_name: str) -> bool:
        return any(s.map is None or s.map == map_name for s in self._sinks)

    def offer(self, batch: Batch) -> bool:
        """Whether every consumer that wants ``batch`` took it."""
        taken = True
        for sink in self._sinks:
            if sink.map is None or sink.map == batch.map:
                try:
                    sink.send.send_nowait(batch)
                except trio.WouldBlock:
                    taken = False
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    continue
        return taken

    def close(self) -> None:
        """The engine has stopped: every ``batches()`` ends once it has taken the rest."""
        for sink in self._sinks:
            sink.send.close()
