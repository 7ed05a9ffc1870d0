"""Reading a gadget's ring and perf buffers from trio: no threads, no polling loops.

Each buffer is read a batch per scheduler pass while records wait, and its file descriptor
waited on with ``trio.lowlevel.wait_readable`` once none do (a perf buffer that is full wakes
nobody: its writes fail). A batch is handed on as one run of records of one size (one copy;
decoded without a slice per record), or as raw bytes when the first record waiting starts no
such run: ring buffers from their own mmap (engine/events/ringbuf.py),
perf buffers from a mapping of each CPU's ring that libbcc opened (engine/events/perfbuf.py).
``on_tick`` runs between reading a batch and handing it on, every ``tick_interval`` seconds,
and once when the pump ends: the reader reads the kernel's counts of lost and refused records
then (engine/events/kernel_counts.py), so a consumer that sees a record sees every count from
before it was written. An idle gadget costs one tick a second (with perf buffers, also the
flush reads below).

Perf buffers' own loss reports (PERF_RECORD_LOST) are not used: the kernel's counts cover
every failed write, and perf's come late or never (kernel_counts.py).

A perf buffer wakes its reader after every ``PERF_WAKEUP_EVENTS`` records on a CPU, not after
each one (bcc's default, ``wakeup_events=1``): each wake-up costs the writer an interrupt and
a scheduler wake-up, and held the writer to ~120 k records/s whatever the reader did
(benchmarks/README.md, Issue 16). Fewer records than that would wait forever, so a timer
reads whatever waits, every ``PERF_FLUSH_INTERVAL`` seconds while it finds records, backing
off to ``PERF_FLUSH_IDLE`` while it finds none: a perf record reaches the consumers at most
``PERF_FLUSH_IDLE`` after it was written (plus the time to read what came before it), or as
soon as its CPU has that many waiting. Ring buffers wake their reader only when it has caught
up (the kernel's own rule), so they need no timer.
"""

from __future__ import annotations

import ctypes as ct
import logging
from collections.abc import Callable
from typing import Any, Protocol

import attrs
import trio

from engine.bcc import libbcc
from engine.events.perfbuf import PerfReader
from engine.events.ringbuf import RecordRun, RingReader

log = logging.getLogger(__name__)

BPF_MAP_TYPE_PERF_EVENT_ARRAY = 4
BPF_MAP_TYPE_RINGBUF = 27
PERF_WAKEUP_EVENTS = 64
PERF_PAGE_COUNT = 256  # pages per CPU of each perf buffer, by default
# Records read one by one where no run starts (a record across the end of a perf buffer, a
# perf loss report, a discarded or other-sized record): a few, and the next read is a run.
BETWEEN_RUNS = 64
PERF_FLUSH_INTERVAL = 0.02  # seconds between flushes while they find records
PERF_FLUSH_IDLE = 0.1  # seconds between flushes once they find none

Batch = Callable[[str, list[bytes]], None]
# A run of records of one size (``Reader.read_run``).
Run = Callable[[str, RecordRun], None]


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


class Reader(Protocol):
    """A ring buffer's reader or one CPU's perf buffer reader."""

    @property
    def fd(self) -> int: ...

    def read(self, limit: int) -> list[bytes]: ...

    def read_run(self, limit: int) -> RecordRun | None: ...

    def close(self) -> None: ...


@attrs.define
class BufferPump:
    """Drains every buffer map of one loaded gadget. ``run`` is a long-running task."""

    bpf: Any
    maps: list[BufferMap]
    on_batch: Batch
    on_tick: Callable[[], None] | None = None
    tick_interval: float = 1.0
    page_count: int = PERF_PAGE_COUNT
    batch: int = 4096  # records per wake-up: a fast producer cannot starve the consumers
    # Where runs of records of one size go (the records that are not in one: ``on_batch``).
    on_run: Run | None = None
    _readers: list[tuple[str, Reader]] = attrs.Factory(list)
    _perf_handles: list[Any] = attrs.Factory(list)  # libbcc's perf readers, freed at close
    _callbacks: list[Any] = attrs.Factory(list)  # keeps ctypes callbacks alive
    _closed: bool = False

    def open(self) -> None:
        """Set up readers for every map (blocking but quick: mmap and map updates)."""
        lib = libbcc.lib()
        for m in self.maps:
            table = self.bpf.get_table(m.name)
            if m.kind == "ringbuf":
                ring = RingReader.open(int(table.map_fd), int(table.max_entries))
                self._readers.append((m.name, ring))
            else:
                self._open_perf(lib, m.name, table)

    def _open_perf(self, lib: Any, name: str, table: Any) -> None:
        from bcc.libbcc import bcc_perf_buffer_opts

        # libbcc opens and maps each CPU's perf event; its reader (and so these callbacks)
        # never runs: the ring is read through a mapping of our own (engine/events/perfbuf.py).
        def on_record(_cookie: Any, _data: Any, _size: int) -> None:
            log.debug("libbcc read perf buffer %r, which it should not", name)

        def on_lost(_cookie: Any, _lost: int) -> None:
            log.debug("libbcc read perf buffer %r, which it should not", name)

        raw_type, lost_type = libbcc.perf_callback_types()
        cb, lost_cb = raw_type(on_record), lost_type(on_lost)
        self._callbacks += [cb, lost_cb]
        for cpu in _online_cpus():
            opts = bcc_perf_buffer_opts()
            opts.pid = -1
            opts.cpu = cpu
            opts.wakeup_events = PERF_WAKEUP_EVENTS
            handle = lib.bpf_open_perf_buffer_opts(
                cb, lost_cb, None, self.page_count, ct.byref(opts)
            )
            if not handle:
                raise OSError(ct.get_errno(), f"cannot open perf buffer {name!r} on CPU {cpu}")
            self._perf_handles.append(handle)
            fd = lib.perf_reader_fd(handle)
            self._readers.append((name, PerfReader.open(fd, self.page_count)))
            table[table.Key(cpu)] = table.Leaf(fd)

    def _read(self, name: str, reader: Reader) -> bool:
        """One read of ``reader``, as a run of records of one size when there is one (and
        ``on_run`` takes runs); whether it read any."""
        limit = self.batch
        if self.on_run is not None:
            run = reader.read_run(self.batch)
            if run is not None:
                self._tick()
                self.on_run(name, run)
                return True
            limit = BETWEEN_RUNS
        batch = reader.read(limit)
        if batch:
            self._tick()
            self.on_batch(name, batch)
        return bool(batch)

    def drain(self) -> None:
        """Read everything that is waiting now, in every map (also used at shutdown)."""
        if self._closed:
            return
        for name, reader in self._readers:
            while self._read(name, reader):
                pass

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                for name, reader in self._readers:
                    nursery.start_soon(self._watch, name, reader)
                if self.on_tick is not None:
                    nursery.start_soon(self._tick_periodically)
                if self._perf_handles:
                    nursery.start_soon(self._flush_periodically)
                task_status.started()
        finally:
            self._tick()  # the last counts, before the record queue closes

    def _tick(self) -> None:
        if self.on_tick is not None and not self._closed:
            self.on_tick()

    async def _tick_periodically(self) -> None:
        while True:
            await trio.sleep(self.tick_interval)
            self._tick()

    async def _flush_periodically(self) -> None:
        """Read the perf buffers' records that are too few to wake their reader: every
        ``PERF_FLUSH_INTERVAL`` while flushes find records, backing off to ``PERF_FLUSH_IDLE``
        while they find none (each flush costs an idle engine ~0.35 ms of CPU)."""
        perf = [(name, r) for name, r in self._readers if isinstance(r, PerfReader)]
        interval = PERF_FLUSH_INTERVAL
        while True:
            await trio.sleep(interval)
            found = [self._read(name, reader) for name, reader in perf]
            interval = PERF_FLUSH_INTERVAL if any(found) else min(2 * interval, PERF_FLUSH_IDLE)

    async def _watch(self, name: str, reader: Reader) -> None:
        """Read ``reader`` while records wait, a batch per scheduler pass; wait for the
        kernel to say there are more only once a read finds none."""
        while True:
            if not self._read(name, reader):
                await self._wait(name, reader)
            await trio.lowlevel.checkpoint()

    async def _wait(self, name: str, reader: Reader) -> None:
        if not isinstance(reader, PerfReader):
            # A ring buffer's fd is readable while records wait: one that came since the
            # read ends the wait at once.
            await trio.lowlevel.wait_readable(reader.fd)
            return
        async with trio.open_nursery() as nursery:
            # A perf fd reports each wake-up once (its poll clears the flag), and trio re-arms
            # epoll with EPOLL_CTL_MOD, which polls: a wake-up that came since the last read
            # is used up there and epoll_wait then finds nothing, leaving records unread
            # until the next one, which never comes while the buffer is full. So read once
            # more after arming (wait_readable arms before it sleeps, and this task runs
            # then); what it finds ends the wait.
            nursery.start_soon(self._read_soon, name, reader, nursery.cancel_scope)
            await trio.lowlevel.wait_readable(reader.fd)

    async def _read_soon(self, name: str, reader: Reader, wait: trio.CancelScope) -> None:
        if self._read(name, reader):
            wait.cancel()

    def close(self) -> None:
        """Release the readers; idempotent. Call after the ``run`` task has ended."""
        if self._closed:
            return
        self._closed = True
        for _, reader in self._readers:
            reader.close()
        self._readers.clear()
        lib = libbcc.lib()
        for handle in self._perf_handles:
            lib.perf_reader_free(handle)
        self._perf_handles.clear()
        self._callbacks.clear()
