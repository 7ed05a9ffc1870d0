"""The engine's nested nurseries: what must outlive something is started first, stopped last.

``work`` runs the buffer pumps and host iterators; in it, ``netns`` runs one task per traced
netns; in that, ``sources`` runs the runtimes' and netns sources, the world feeder and the link
watcher. Stopping cancels the sources first; the netns tasks then end by themselves
(``PerNetns.wind_down``), their detach records read while the readers still run; then the
readers end and the record queue closes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import attrs
import trio


class Closable(Protocol):
    def close(self) -> None: ...


@attrs.frozen
class Layers:
    """The engine's work: ``sources`` in ``netns`` in ``work``; ``done`` once all have ended."""

    work: trio.Nursery
    netns: trio.Nursery
    sources: trio.Nursery
    stopping: trio.Event
    done: trio.Event


async def run_work(
    outputs: Sequence[Closable],
    *,
    task_status: trio.TaskStatus[Layers] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The engine's work until ``stop()``: the sources are cancelled first; the netns tasks
    then end by themselves (``PerNetns.wind_down``), their detach records read while the
    readers still run; then the readers end, and the outputs (the record queue, the batch
    consumers) close."""
    stopping, done = trio.Event(), trio.Event()
    try:
        async with trio.open_nursery() as work:
            # Leaving this block waits for the netns tasks, after the sources have ended.
            async with trio.open_nursery() as netns, trio.open_nursery() as sources:
                task_status.started(Layers(work, netns, sources, stopping, done))
                await stopping.wait()
                sources.cancel_scope.cancel()
            work.cancel_scope.cancel()
    finally:
        stopping.set()  # however it ended, the engine no longer changes
        done.set()
        for output in outputs:
            output.close()
