"""Reading a BPF ring buffer straight from its memory: no libbcc callback per record.

The kernel exposes a ring buffer map through mmap of its fd:

- offset 0, one page, read-write: the consumer position (u64), which we advance;
- offset one page, read-only: a page holding the producer position (u64), then the data area,
  mapped twice in a row so that a record that wraps around the end reads as one slice.

Each record starts with an 8-byte header: a u32 length whose bit 31 says the producer has not
committed it yet (BUSY) and bit 30 says it was discarded (DISCARD), then 4 bytes of padding.
Records are 8-byte aligned. Reading stops at the first BUSY record. Positions only grow; the
offset in the data area is ``position & (size - 1)``.

``RingReader.read(limit)`` reads at most ``limit`` records, so a producer faster than the
reader cannot keep it in one call forever (libbpf's consume loops while data keeps coming).
``read_run(limit)`` takes a run of records of one length in one copy, without a Python step per
record: since the data area is mapped twice, the run is one slice, and its records lie at a
fixed stride; the length words are checked as one numpy view (engine/events/batches.py).

The consumer position is written as one aligned 8-byte store (a ``ctypes.c_uint64`` over the
page), never through ``struct.pack_into``: the kernel reads it while it reserves, and only a
single store guarantees that it never sees half of an old and half of a new position (a torn
position looks like a full ring, and the reservation fails).
"""

from __future__ import annotations

import ctypes as ct
import mmap
import struct

import attrs
import numpy as np

BUSY = 1 << 31
DISCARD = 1 << 30
HEADER = 8
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


@attrs.frozen
class RecordRun:
    """Records of one size read in one copy: ``count`` of them at a fixed stride in ``data``,
    each one's own ``length`` bytes ``skip`` bytes into its span (behind the buffer's record
    header). A ring's span pads its record to 8 bytes with whatever the ring held there before:
    not the record's bytes."""

    data: bytes
    count: int
    skip: int
    length: int


def record_span(length: int) -> int:
    """Bytes a record of ``length`` data bytes takes in the ring, header included."""
    return (length + HEADER + 7) & ~7


@attrs.define
class RingReader:
    """The consumer side of one ring buffer map. ``close()`` unmaps; idempotent."""

    fd: int
    size: int  # the data area, in bytes: the map's max_entries, a power of two
    _consumer: mmap.mmap
    _producer: mmap.mmap
    _page: int
    # The consumer position, as the one 8-byte word at the start of the consumer page.
    _position: ct.c_uint64 = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._position = ct.c_uint64.from_buffer(self._consumer, 0)

    @classmethod
    def open(cls, fd: int, size: int) -> RingReader:
        if size <= 0 or size & (size - 1):
            raise ValueError(f"ring buffer size {size} is not a power of two")
        page = mmap.PAGESIZE
        consumer = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        try:
            producer = mmap.mmap(fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        except BaseException:
            consumer.close()
            raise
        return cls(fd, size, consumer, producer, page)

    def available(self) -> int:
        """Bytes committed or reserved past the consumer position."""
        prod: int = _U64.unpack_from(self._producer, 0)[0]
        return prod - self._position.value

    def read(self, limit: int) -> list[bytes]:
        """Up to ``limit`` committed records, oldest first; frees their space in the ring."""
        producer = self._producer
        cons = self._position.value
        prod = _U64.unpack_from(producer, 0)[0]
        mask, base = self.size - 1, self._page
        out: list[bytes] = []
        unpack_u32 = _U32.unpack_from
        while cons < prod and len(out) < limit:
            at = base + (cons & mask)
            length = unpack_u32(producer, at)[0]
            if length & BUSY:
                break  # reserved, not yet committed: everything after it waits too
            size = length & ~(BUSY | DISCARD)
            if not length & DISCARD:
                out.append(producer[at + HEADER : at + HEADER + size])
            cons += record_span(size)
        # x86-64 keeps stores in order: the kernel sees the new position after our reads.
        self._position.value = cons
        return out

    def read_run(self, limit: int) -> RecordRun | None:
        """Up to ``limit`` committed records that all have the first one's length (none
        discarded), in one copy of their spans; None when the first record is not such (read
        it with ``read``) or nothing waits."""
        cons = self._position.value
        prod = _U64.unpack_from(self._producer, 0)[0]
        at = self._page + (cons & (self.size - 1))
        first = _U32.unpack_from(self._producer, at)[0] if cons < prod else BUSY
        if first & (BUSY | DISCARD):
            return None
        span = record_span(first)
        count = min(limit, (prod - cons) // span, self.size // span)
        words = np.frombuffer(self._producer, "<u4", count * span // 4, at)[:: span // 4]
        same = words == first  # a busy, discarded or other-length record ends the run
        del words  # a view pins the mapping
        if not same.all():
            count = int(same.argmin())
        if count == 0:
            return None
        run = self._producer[at : at + count * span]
        self._position.value = cons + count * span
        return RecordRun(run, count, HEADER, first)

    def close(self) -> None:
        """Unmap both areas; idempotent."""
        if self._consumer.closed:
            return
        del self._position  # the view pins the mapping: it must go before the unmap
        self._consumer.close()
        self._producer.close()
