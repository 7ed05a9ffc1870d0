"""The origin header in front of every buffer record (engine/bcc/origin_prelude.py).

32 bytes, little-endian: kind, tgid, mntns, netns (u32 each), cgroup (u64), ifindex, flags
(u32 each). The gadget's own record follows at ``HEADER``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

import attrs

from engine.bcc.origin_prelude import HEADER_SIZE, ORIGIN_PACKET, ORIGIN_TASK

_LAYOUT = struct.Struct("<IIIIQII")
HEADER = _LAYOUT.size
assert HEADER == HEADER_SIZE
# For a reader that unpacks the header and the record behind it in one call.
FORMAT = _LAYOUT.format


@attrs.frozen
class Origin:
    """Where a record was written from.

    ``kind`` TASK: a tracing program on behalf of a task (its tgid, mount namespace, netns,
    cgroup); PACKET: a classifier (``ifindex``: the host-side veth) or a socket filter
    (``netns``: the packet's device's); KERNEL: a tracing program in an interrupt, a softirq
    or a kernel thread, on no task's behalf (no field applies).
    """

    kind: int
    tgid: int = 0
    mntns: int = 0
    netns: int = 0
    cgroup: int = 0
    ifindex: int = 0

    @classmethod
    def of(cls, raw: bytes) -> Origin:
        kind, tgid, mntns, netns, cgroup, ifindex, _flags = _LAYOUT.unpack_from(raw)
        return cls(kind, tgid, mntns, netns, cgroup, ifindex)

    @property
    def is_task(self) -> bool:
        return self.kind == ORIGIN_TASK

    @property
    def is_packet(self) -> bool:
        return self.kind == ORIGIN_PACKET

    def to_json(self, host_netns: int | None, host_ifindexes: Mapping[int, int]) -> dict[str, int]:
        """The event's ``origin``: the fields that apply. A classifier's netns is the one its
        host-side veth leads to (absent when the engine does not know the veth)."""
        if self.kind == ORIGIN_TASK:
            return {
                "mntns": self.mntns,
                "netns": self.netns,
                "cgroup": self.cgroup,
                "tgid": self.tgid,
            }
        if self.kind == ORIGIN_PACKET:
            netns = self.netns
            if not netns or netns == host_netns:
                netns = host_ifindexes.get(self.ifindex, netns)
            return {"netns": netns} if netns else {}
        return {}


def netns_origin(inode: int) -> dict[str, int]:
    """The ``origin`` of an iterator's record: the netns it ran in."""
    return {"netns": inode}
