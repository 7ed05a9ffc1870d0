"""A runtime source (Docker, podman, containerd) run by a test: its snapshot, everything it sent
after, and ``until`` to wait on them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import attrs
import trio

from engine.records import ContainerAdded, ContainerEvent, ContainerRemoved, SourceDisconnected
from engine.sources.containers import Container
from engine.sources.runtimes import ContainerSource
from tests.support.waiting import Changes


@attrs.define
class Records(Changes):
    """What a source reported: ``snapshot`` (what ``start()`` handed back) first in ``seen``,
    then what it sent."""

    seen: list[ContainerEvent] = attrs.Factory(list)
    snapshot: list[ContainerEvent] = attrs.Factory(list)

    async def consume(self, receive: trio.abc.ReceiveChannel[ContainerEvent]) -> None:
        async for record in receive:
            self.seen.append(record)
            self.changed()

    def describe(self) -> str:
        return f"saw {self.seen}"

    @property
    def sent(self) -> list[ContainerEvent]:
        """What came through the channel, after the snapshot."""
        return self.seen[len(self.snapshot) :]

    def since_gap(self) -> list[ContainerEvent]:
        """What came from the source's first disconnection on."""
        first = next(i for i, r in enumerate(self.seen) if isinstance(r, SourceDisconnected))
        return self.seen[first:]

    def about(self, name: str) -> list[ContainerEvent]:
        """The records about one container, by name, in order (source records excluded)."""
        return [r for r in self.seen if hasattr(r, "container") and r.container.name == name]

    async def until_seen(self, kind: type[ContainerEvent], timeout: float = 10) -> None:  # noqa: ASYNC109
        """Until a record of ``kind`` came."""
        await self.until(lambda: any(isinstance(r, kind) for r in self.seen), timeout, kind.TYPE)


@asynccontextmanager
async def running(source: ContainerSource, *, buffer: int = 0) -> AsyncIterator[Records]:
    """The source running, its records collected; stopped when the block ends."""
    records = Records()
    send, receive = trio.open_memory_channel[ContainerEvent](buffer)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(records.consume, receive)
        with trio.fail_after(10):
            records.snapshot = await nursery.start(source.run, send)
        records.seen[:0] = records.snapshot
        yield records
        nursery.cancel_scope.cancel()


def added(records: Sequence[ContainerEvent]) -> dict[str, Container]:
    """The containers added, by id."""
    return {r.container.id: r.container for r in records if isinstance(r, ContainerAdded)}


def removed(records: Sequence[ContainerEvent]) -> dict[str, ContainerRemoved]:
    """The removal records, by container id."""
    return {r.container.id: r for r in records if isinstance(r, ContainerRemoved)}
