"""Records held while their netns is pending identification (see engine/world.py).

A netns traced speculatively produces records before the runtime has said whose it is: they
wait here, in arrival order, until ``World.settle`` decides; then ``take`` hands them back to
be released (the container filled in) or dropped. Gadget events are bounded per netns (a
netns that floods before it is identified must not grow the engine without limit); the
engine's own attach records are few and always kept.
"""

from __future__ import annotations

import attrs

from engine.records import Event, Record

DEFAULT_HOLD_LIMIT = 1024


@attrs.define
class Taken:
    """What a netns held: its records in order, and the events refused when it was full."""

    records: list[Record] = attrs.Factory(list)
    overflow: dict[tuple[str, str], int] = attrs.Factory(dict)  # (gadget, source) → count
    events: int = 0


@attrs.define
class Held:
    limit: int = DEFAULT_HOLD_LIMIT
    _by_netns: dict[int, Taken] = attrs.Factory(dict)

    def hold(self, inode: int, record: Record) -> None:
        """Keep an engine record (attach lifecycle) for ``inode``."""
        self._by_netns.setdefault(inode, Taken()).records.append(record)

    def hold_event(self, inode: int, event: Event) -> None:
        """Keep a gadget event for ``inode``, or count it as refused when the netns is full."""
        taken = self._by_netns.setdefault(inode, Taken())
        if taken.events >= self.limit:
            key = (event.gadget, event.source)
            taken.overflow[key] = taken.overflow.get(key, 0) + 1
            return
        taken.events += 1
        taken.records.append(event)

    def merge(self, inode: int, taken: Taken) -> None:
        """Add what was held under another key (a pre-attached veth's) after ``inode``'s."""
        into = self._by_netns.setdefault(inode, Taken())
        into.records.extend(taken.records)
        into.events += taken.events
        for key, count in taken.overflow.items():
            into.overflow[key] = into.overflow.get(key, 0) + count

    def take(self, inode: int) -> Taken:
        return self._by_netns.pop(inode, Taken())

    def __len__(self) -> int:
        return sum(len(t.records) for t in self._by_netns.values())
