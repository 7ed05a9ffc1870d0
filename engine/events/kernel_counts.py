"""The kernel's own counts per buffer map: records it could not write, records it refused.

Every rewritten write (engine/gadget/origin.py) counts, in the per-CPU array
``engine_counts`` at the map's number, a record it could not write (``lost``: the buffer was
full, or the record too big) and one the selection refused (``unselected``: a task outside
the selection, never written). ``KernelCounts.read`` sums the CPUs and returns what changed
since the last read.

The map is read with one ``bpf_lookup_elem`` per buffer map, on its fd, without bcc's table
objects (which belong to whoever holds the gadget's lock).

Perf buffers report losses themselves too (PERF_RECORD_LOST), but only with the next record
that fits on the same CPU, so a flood's last losses are never reported that way: these counts
are used for ring and perf buffers alike, and perf's own reports are not added to them.
"""

from __future__ import annotations

import ctypes as ct
import functools
from collections.abc import Iterable
from typing import Any

import attrs

from engine.gadget.origin import OutputMap


class _Count(ct.Structure):
    _fields_ = (("lost", ct.c_uint64), ("unselected", ct.c_uint64))


@attrs.frozen
class CountsChanged:
    """What one map's counts grew by since the last read."""

    map: str
    lost: int
    unselected: int


@functools.cache
def _possible_cpus() -> int:
    from bcc.utils import get_possible_cpus

    return len(get_possible_cpus())


@attrs.define
class KernelCounts:
    fd: int
    maps: tuple[OutputMap, ...]
    _lookup: Any
    _seen: dict[str, tuple[int, int]] = attrs.Factory(dict)

    @classmethod
    def open(cls, lib: Any, table: Any, maps: Iterable[OutputMap]) -> KernelCounts:
        """Over bcc's ``engine_counts`` table (its fd is used, nothing else)."""
        return cls(int(table.map_fd), tuple(maps), lib.bpf_lookup_elem)

    def totals(self, index: int) -> tuple[int, int]:
        """(lost, unselected) of map number ``index``, summed over the CPUs."""
        values = (_Count * _possible_cpus())()
        key = ct.c_uint32(index)
        if self._lookup(self.fd, ct.byref(key), ct.byref(values)) != 0:
            return 0, 0  # the map is gone (the gadget is closing)
        return sum(v.lost for v in values), sum(v.unselected for v in values)

    def read(self) -> list[CountsChanged]:
        """The maps whose counts grew since the last read, and by how much."""
        out = []
        for m in self.maps:
            lost, unselected = self.totals(m.index)
            before = self._seen.get(m.name, (0, 0))
            if (lost, unselected) != before:
                self._seen[m.name] = (lost, unselected)
                out.append(CountsChanged(m.name, lost - before[0], unselected - before[1]))
        return out
