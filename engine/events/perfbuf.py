"""Reading one CPU's perf buffer straight from its memory: no libbcc callback per record.

libbcc opens the perf event (``bpf_open_perf_buffer_opts``) and maps its ring; the same fd
mapped again with the same size shares that ring (the kernel counts the mappings), so the
engine maps it once more and reads it itself, never calling libbcc's reader. The mapping:

- the first page is ``struct perf_event_mmap_page``: ``data_head`` (u64 at 1024, written by
  the kernel), ``data_tail`` (u64 at 1032, ours), ``data_offset`` and ``data_size``;
- then the data area (``data_size`` bytes, a power of two), mapped once: a record that wraps
  around its end is put together from two slices.

Each record starts with ``struct perf_event_header`` (u32 type, u16 misc, u16 size). A BPF
output sample (``PERF_RECORD_SAMPLE`` with ``PERF_SAMPLE_RAW``) holds a u32 size and the raw
bytes; ``PERF_RECORD_LOST`` says how many records the kernel dropped (counted by the kernel's
counts already, engine/events/kernel_counts.py). ``data_tail`` is written as one aligned
8-byte store after the reads (x86-64 keeps stores in order), as for ring buffers.
"""

from __future__ import annotations

import ctypes as ct
import mmap
import struct

import attrs
import numpy as np

from engine.events.ringbuf import RecordRun

HEAD, TAIL, OFFSET, SIZE = 1024, 1032, 1040, 1048
RECORD_SAMPLE = 9
SAMPLE_HEADER = 12  # perf_event_header, then the raw data's u32 size
_HEADER = struct.Struct("<IHH")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


@attrs.define
class PerfReader:
    """The consumer side of one CPU's perf buffer. ``close()`` unmaps; idempotent."""

    fd: int
    _map: mmap.mmap
    _base: int  # where the data area starts in the mapping
    size: int  # the data area, in bytes
    _tail: ct.c_uint64 = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._tail = ct.c_uint64.from_buffer(self._map, TAIL)

    @classmethod
    def open(cls, fd: int, page_count: int) -> PerfReader:
        """Map the ring of a perf event fd that libbcc has mapped with ``page_count`` pages."""
        length = (page_count + 1) * mmap.PAGESIZE
        memory = mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        offset, size = struct.unpack_from("<QQ", memory, OFFSET)
        return cls(fd, memory, offset or mmap.PAGESIZE, size or page_count * mmap.PAGESIZE)

    def _slice(self, position: int, length: int) -> bytes:
        """``length`` bytes of the data area from ``position``, put together across the end."""
        at = position & (self.size - 1)
        start = self._base + at
        if at + length <= self.size:
            return self._map[start : start + length]
        first = self.size - at
        return (
            self._map[start : start + first] + self._map[self._base : self._base + length - first]
        )

    def read(self, limit: int) -> list[bytes]:
        """Up to ``limit`` samples' raw bytes, oldest first; frees their space."""
        tail = self._tail.value
        head = _U64.unpack_from(self._map, HEAD)[0]
        out: list[bytes] = []
        while tail < head and len(out) < limit:
            kind, _misc, size = _HEADER.unpack(self._slice(tail, 8))
            if kind == RECORD_SAMPLE:
                raw_size = _U32.unpack(self._slice(tail + 8, 4))[0]
                out.append(self._slice(tail + SAMPLE_HEADER, raw_size))
            tail += size
        self._tail.value = tail
        return out

    def read_run(self, limit: int) -> RecordRun | None:
        """Up to ``limit`` samples with the first one's header (so of one size), up to the end
        of the data area, in one copy; None when nothing waits or the first sample starts no
        run (it wraps around the end of the data area, say): read it with ``read``.

        Records that are not samples in front of it (loss reports) are passed over: once the
        buffer has been full, the kernel writes one wherever space is freed, and a run that
        stopped at each would leave the ring in pieces of the size ``read`` reads.
        """
        tail = self._tail.value
        head = _U64.unpack_from(self._map, HEAD)[0]
        while True:
            at = tail & (self.size - 1)
            if tail >= head or at + 8 > self.size:
                self._tail.value = tail
                return None
            first = _U64.unpack_from(self._map, self._base + at)[0]
            kind, size = first & 0xFFFFFFFF, first >> 48
            if kind == RECORD_SAMPLE or not size:
                break
            tail += size
        if kind != RECORD_SAMPLE or size % 8:
            self._tail.value = tail
            return None
        count = min(limit, (head - tail) // size, (self.size - at) // size)
        if count == 0:
            return None
        words = np.frombuffer(self._map, "<u8", count * size // 8, self._base + at)[:: size // 8]
        same = words == first
        del words  # a view pins the mapping
        if not same.all():
            count = int(same.argmin())
        run = self._map[self._base + at : self._base + at + count * size]
        self._tail.value = tail + count * size
        # The raw data's size, as ``read`` gives it: the kernel's, padded to 8 (a sample does
        # not say how many bytes the program wrote).
        return RecordRun(run, count, SAMPLE_HEADER, size - SAMPLE_HEADER)

    def close(self) -> None:
        if self._map.closed:
            return
        del self._tail
        self._map.close()
