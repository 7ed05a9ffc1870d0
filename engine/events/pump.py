"""Reading a gadget's ring and perf buffers from trio: no threads, no polling loops.

Each buffer's file descriptor is waited on with ``trio.lowlevel.wait_readable``; when the
kernel says records are waiting, they are read in one batch and handed on as raw bytes: ring
buffers from their own mmap (engine/ringbuf.py), perf buffers through libbcc. ``on_tick``
runs after reads (at most every ``TICK_AFTER_READ`` seconds), every ``tick_interval`` seconds
and once when the pump ends: the reader reads the kernel's counts of lost and refused records
then (engine/events/kernel_counts.py). An idle gadget costs one tick a second.

Perf buffers' own loss reports (PERF_RECORD_LOST) are not used: the kernel's counts cover
every failed write, and perf's come late or never (kernel_counts.py).
"""

from __future__ import annotations

import ctypes as ct
import logging
from collections.abc import Callable
from typing import Any

import attrs
import trio

from engine.bcc import libbcc
from engine.events.ringbuf import RingReader

log = logging.getLogger(__name__)

BPF_MAP_TYPE_PERF_EVENT_ARRAY = 4
BPF_MAP_TYPE_RINGBUF = 27

Batch = Callable[[str, list[bytes]], None]
# A ring's run of records of one length (RingReader.read_run): map, the run, its count.
Run = Callable[[str, bytes, int], None]
# Seconds between two ticks that follow reads: a steady flow of batches does not read the
# counts once per batch.
TICK_AFTER_READ = 0.1


@attrs.frozen
class BufferMap:
    name: str
    kind: str  # "ringbuf" or "perf"


def buffer_maps(lib: Any, module: Any) -> list[BufferMap]:
    """The ring and perf buffer maps a compiled module defines, in definition order."""
    out = []
    for i in range(lib.bpf_num_tables(module)):
        name = lib.bpf_table_name(module, i).decode()
        type_id = lib.bpf_table_type_id(module, i)
        if type_id == BPF_MAP_TYPE_RINGBUF:
            out.append(BufferMap(name, "ringbuf"))
        elif type_id == BPF_MAP_TYPE_PERF_EVENT_ARRAY:
            out.append(BufferMap(name, "perf"))
    return out


def _online_cpus() -> list[int]:
    text = open("/sys/devices/system/cpu/online").read().strip()  # noqa: SIM115
    cpus: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus.extend(range(int(first), int(last or first) + 1))
    return cpus


@attrs.define
class BufferPump:
    """Drains every buffer map of one loaded gadget. ``run`` is a long-running task."""

    bpf: Any
    maps: list[BufferMap]
    on_batch: Batch
    on_tick: Callable[[], None] | None = None
    tick_interval: float = 1.0
    page_count: int = 256
    ring_batch: int = 4096  # records per wake-up: a fast producer cannot starve the consumers
    # The maps read as runs (for ``batches()``), and where their runs go.
    columnar: Callable[[str], bool] | None = None
    on_run: Run | None = None
    _rings: list[tuple[str, RingReader]] = attrs.Factory(list)
    _pending: dict[str, list[bytes]] = attrs.Factory(dict)
    _readers: list[tuple[str, Any, int]] = attrs.Factory(list)  # map, reader, fd
    _callbacks: list[Any] = attrs.Factory(list)  # keeps ctypes callbacks alive
    _last_tick: float = float("-inf")
    _closed: bool = False

    def open(self) -> None:
        """Set up readers for every map (blocking but quick: mmap and map updates)."""
        lib = libbcc.lib()
        for m in self.maps:
            self._pending[m.name] = []
            table = self.bpf.get_table(m.name)
            if m.kind == "ringbuf":
                self._open_ringbuf(m.name, table)
            else:
                self._open_perf(lib, m.name, table)

    def _open_ringbuf(self, name: str, table: Any) -> None:
        self._rings.append((name, RingReader.open(int(table.map_fd), int(table.max_entries))))

    def _open_perf(self, lib: Any, name: str, table: Any) -> None:
        from bcc.libbcc import bcc_perf_buffer_opts

        pending = self._pending[name]

        def on_record(_cookie: Any, data: Any, size: int) -> None:
            pending.append(ct.string_at(data, size))

        def on_lost(_cookie: Any, lost: int) -> None:
            log.debug("perf buffer %r says %d lost (counted by the kernel already)", name, lost)

        raw_type, lost_type = libbcc.perf_callback_types()
        cb, lost_cb = raw_type(on_record), lost_type(on_lost)
        self._callbacks += [cb, lost_cb]
        for cpu in _online_cpus():
            opts = bcc_perf_buffer_opts()
            opts.pid = -1
            opts.cpu = cpu
            opts.wakeup_events = 1
            reader = lib.bpf_open_perf_buffer_opts(
                cb, lost_cb, None, self.page_count, ct.byref(opts)
            )
            if not reader:
                raise OSError(ct.get_errno(), f"cannot open perf buffer {name!r} on CPU {cpu}")
            fd = lib.perf_reader_fd(reader)
            self._readers.append((name, reader, fd))
            table[table.Key(cpu)] = table.Leaf(fd)

    def _flush(self) -> None:
        for name, pending in self._pending.items():
            if pending:
                batch = pending[:]
                pending.clear()
                self.on_batch(name, batch)

    def drain(self) -> None:
        """Read everything that is waiting now, in every map (also used at shutdown)."""
        if self._closed:
            return
        lib = libbcc.lib()
        for name, ring in self._rings:
            while self._read_ring(name, ring):
                pass
        for _, reader, _fd in self._readers:
            lib.perf_reader_event_read(reader)
        self._flush()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        lib = libbcc.lib()
        try:
            async with trio.open_nursery() as nursery:
                for name, ring in self._rings:
                    nursery.start_soon(self._watch_ringbuf, name, ring)
                for _, reader, fd in self._readers:
                    nursery.start_soon(self._watch_perf, lib, reader, fd)
                if self.on_tick is not None:
                    nursery.start_soon(self._tick_periodically)
                task_status.started()
        finally:
            self._tick()  # the last counts, before the record channel closes

    def _tick(self) -> None:
        if self.on_tick is not None and not self._closed:
            self._last_tick = trio.current_time()
            self.on_tick()

    def _tick_after_read(self) -> None:
        if trio.current_time() - self._last_tick >= TICK_AFTER_READ:
            self._tick()

    async def _tick_periodically(self) -> None:
        while True:
            await trio.sleep(self.tick_interval)
            self._tick()

    def _read_ring(self, name: str, ring: RingReader) -> bool:
        """One read of ``ring``, as a run when its map is columnar; whether it read any."""
        if self.on_run is not None and self.columnar is not None and self.columnar(name):
            run = ring.read_run(self.ring_batch)
            if run is not None:
                self.on_run(name, *run)
                return True
        batch = ring.read(self.ring_batch)
        if batch:
            self.on_batch(name, batch)
        return bool(batch)

    async def _watch_ringbuf(self, name: str, ring: RingReader) -> None:
        while True:
            # Readable while records wait: after a partial read this returns at once.
            await trio.lowlevel.wait_readable(ring.fd)
            if self._read_ring(name, ring):
                self._tick_after_read()
            await trio.lowlevel.checkpoint()

    async def _watch_perf(self, lib: Any, reader: Any, fd: int) -> None:
        while True:
            await trio.lowlevel.wait_readable(fd)
            lib.perf_reader_event_read(reader)
            self._flush()
            self._tick_after_read()
            await trio.lowlevel.checkpoint()

    def close(self) -> None:
        """Release the readers; idempotent. Call after the ``run`` task has ended."""
        if self._closed:
            return
        self._closed = True
        lib = libbcc.lib()
        for _, ring in self._rings:
            ring.close()
        self._rings.clear()
        for _, reader, _fd in self._readers:
            lib.perf_reader_free(reader)
        self._readers.clear()
        self._callbacks.clear()
