"""Mount namespaces that records name before any container claims them.

A container's first processes run (and exec, and exit) before its runtime reports it, so
with a selection the kernel lets records of a mount namespace it does not know yet through
(``engine_filter`` mode 2, docs/events.md) and the engine holds them, by mount namespace, for
up to ``timeout`` seconds: released if a selected container claims the namespace by then,
dropped if not. A namespace nobody claims in time (a host service with mounts of its own,
a container that was never reported) is *rejected*: the kernel is told to drop its records
from then on. Rejected namespaces are remembered up to ``limit``, the oldest forgotten first
(the kernel's map of namespaces is bounded too).
"""

from __future__ import annotations

import attrs

DEFAULT_REJECTED_LIMIT = 4096


@attrs.define
class PendingMntns:
    timeout: float
    limit: int = DEFAULT_REJECTED_LIMIT
    _deadlines: dict[int, float] = attrs.Factory(dict)  # mntns → when it stops pending
    _rejected: dict[int, None] = attrs.Factory(dict)  # in the order they were rejected

    def pend(self, mntns: int, now: float) -> bool:
        """Hold records of ``mntns`` from ``now`` on; True when it was not pending yet."""
        if mntns in self._deadlines:
            return False
        self._deadlines[mntns] = now + self.timeout
        return True

    def is_pending(self, mntns: int) -> bool:
        return mntns in self._deadlines

    def is_rejected(self, mntns: int) -> bool:
        return mntns in self._rejected

    def next_deadline(self) -> float | None:
        return min(self._deadlines.values(), default=None)

    def due(self, now: float, claimed: frozenset[int]) -> list[int]:
        """The namespaces that stop pending now: claimed ones, and those whose time is up."""
        out = [m for m, deadline in self._deadlines.items() if m in claimed or now >= deadline]
        for mntns in out:
            del self._deadlines[mntns]
        return out

    def reject(self, mntns: int) -> None:
        self._rejected[mntns] = None
        while len(self._rejected) > self.limit:
            del self._rejected[next(iter(self._rejected))]

    def rejected(self) -> tuple[int, ...]:
        return tuple(self._rejected)
