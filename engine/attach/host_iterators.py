"""Iterators that run on the host (iter/task): at start, on an interval, and on demand.

Each gets one BPF link for the life of the engine; a run creates a read fd from the link,
reads it to its end in a worker thread and turns what was written into events (typed records
or text lines, see engine.events.iter_decode). Per-netns iterators (iter/tcp, iter/udp) are run by
engine.attach.per_netns instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

import attrs
import trio

from engine.attach.iterator import IterLink, read_iterator
from engine.bcc.loader import LoadedGadget, LoadedProgram
from engine.errors import AttachError
from engine.events.iter_decode import decode_iter_output
from engine.gadget.maps import iter_source
from engine.gadget.sections import Kind
from engine.records import Event, ProgramAttached, Record

DEFAULT_INTERVAL = 10.0

Deliver = Callable[[str, str, list[Record]], None]  # gadget, source, records


@attrs.frozen
class HostIterator:
    loaded: LoadedGadget
    program: LoadedProgram
    link: IterLink


@attrs.define
class HostIteratorRunner:
    """Runs the host iterators: ``run`` is the long-running task, ``run_once`` on demand."""

    iterators: Sequence[HostIterator]
    deliver: Deliver
    interval: float = DEFAULT_INTERVAL
    _lock: trio.Lock = attrs.Factory(trio.Lock)

    def attached(self) -> list[ProgramAttached]:
        """One ``attached`` record per host iterator: its link is made when it is opened."""
        return [
            ProgramAttached(
                gadget=it.loaded.gadget.name,
                program=it.program.spec.function,
                kind="iter",
                target=it.program.spec.target,
            )
            for it in self.iterators
        ]

    async def run_once(self) -> None:
        """Run each iterator to its end and deliver its events; returns when all are done."""
        # One run at a time, so that two runs' events never interleave.
        async with self._lock:
            for it in self.iterators:
                await self._run(it)

    async def _run(self, it: HostIterator) -> None:
        spec = it.program.spec
        try:
            # Not abandoned on cancellation: the thread closes its read fd itself.
            raw = await trio.to_thread.run_sync(read_iterator, it.link.fd)
        except OSError as exc:
            raise AttachError.from_os(spec.function, "cannot run the iterator", exc) from exc
        source = iter_source(it.loaded.gadget, spec)
        gadget = it.loaded.gadget.name
        records: list[Record] = [
            Event(gadget, source, spec.function, data)
            for data in decode_iter_output(it.loaded, it.program, raw)
        ]
        self.deliver(gadget, source, records)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run once, report started, then run every ``interval`` seconds until cancelled."""
        await self.run_once()
        task_status.started()
        while True:
            await trio.sleep(self.interval)
            await self.run_once()


@contextlib.asynccontextmanager
async def host_iterators(loaded: Sequence[LoadedGadget]) -> AsyncIterator[list[HostIterator]]:
    """A link for every iterator program that runs on the host; all closed on exit."""
    async with contextlib.AsyncExitStack() as stack:
        out = []
        for gadget in loaded:
            for program in gadget.programs.values():
                if program.spec.kind is not Kind.ITER or program.spec.per_netns:
                    continue
                link = IterLink.attach(program.fd, program.spec.function)
                stack.push_async_callback(link.aclose)
                out.append(HostIterator(gadget, program, link))
        yield out
