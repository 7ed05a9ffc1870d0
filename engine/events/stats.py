"""Counts per buffer map: received, delivered, and every way a record can be lost."""

from __future__ import annotations

import attrs


@attrs.define
class MapStats:
    """Counts for one buffer map."""

    received: int = 0
    delivered: int = 0
    lost_kernel: int = 0
    lost_engine: int = 0
    lost_pending: int = 0  # held for a netns pending identification, over the bound
    # Records of tasks outside the selection, and read from a netns traced speculatively that
    # turned out not to be the user's (or was never identified): dropped, not lost, since they
    # were never the user's records. All of them, those the kernel refused included.
    unselected: int = 0
    # Of those, the ones the kernel refused before they were written (engine_counts).
    unselected_kernel: int = 0
    filtered: int = 0  # refused by the user's --filter

    def to_json(self) -> dict[str, int]:
        return attrs.asdict(self)


@attrs.define
class Stats:
    maps: dict[tuple[str, str], MapStats] = attrs.Factory(dict)  # (gadget, map)

    def for_map(self, gadget: str, name: str) -> MapStats:
        return self.maps.setdefault((gadget, name), MapStats())

    @property
    def delivered(self) -> int:
        return sum(m.delivered for m in self.maps.values())

    @property
    def lost(self) -> int:
        return sum(m.lost_kernel + m.lost_engine + m.lost_pending for m in self.maps.values())
