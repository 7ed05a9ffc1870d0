"""Per-netns programs: one task per traced netns that attaches them all and detaches on exit.

``PerNetns.apply(changes)`` is called whenever the picture of the world changes, with the netns
it changed for (``reconcile(desired)``, the periodic safety net, with all of them): netns that
should no longer be traced have their task cancelled (which detaches everything in reverse
order), new ones get a task started with a cancel scope of their own, their stop handle.
Attachments inside a task are async context managers, so each has one owner that always
releases it, whatever goes wrong.

A netns traced speculatively (pending identification, engine/world.py) is attached at once;
its records (attach lifecycle and iterator events) wait in ``held`` until the runtime says
whose it is, so that they name the container, or are dropped if it is not selected.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import attrs
import trio

from engine.attach import IterLink, attach_socket_filter, run_iter_in_netns
from engine.attach.netns_records import Emit, NetnsRecords, NetnsState
from engine.attach.netns_tc import NetnsClassifiers, NsidOf
from engine.attach.preattach import PreAttacher
from engine.bcc.loader import LoadedGadget, LoadedProgram
from engine.errors import AttachError
from engine.gadget.sections import Kind
from engine.netns import LinkWatcher, NetnsHandle, NetnsId, NsidClient
from engine.netns.worker import Closer, HostRtnl, Worker
from engine.world.held import Held
from engine.world.state import NetnsTarget, World

log = logging.getLogger(__name__)

_ATTACH_ORDER = {Kind.SOCKET: 0, Kind.CLASSIFIER: 1, Kind.ITER: 2}

# Threads asking the host's rtnetlink for tc attaches (each waits on the RTNL lock in turn).
RTNL_THREADS = 4

AttachStep = Callable[[str, NetnsTarget], Awaitable[None]]


@attrs.frozen
class _IterRound:
    """One requested run of a netns's iterators: ``wake`` asks, ``done`` answers."""

    wake: trio.Event = attrs.Factory(trio.Event)
    done: trio.Event = attrs.Factory(trio.Event)


@attrs.define
class PerNetns:
    loaded: list[LoadedGadget]
    emit: Emit
    nursery: trio.Nursery
    world: World
    iter_interval: float = 10.0
    links: LinkWatcher | None = None
    held: Held | None = None  # where records of netns pending identification wait
    preattach: PreAttacher | None = None  # classifiers attached before the veth moves in
    # The ids the netns source gave each netns: one query fewer before the classifiers.
    nsid_of: NsidOf | None = None
    running: dict[int, NetnsState] = attrs.Factory(dict)
    # Test seam, None in production: awaited with a step's name ("open", "attach",
    # "add_filter", "attached") and the target before that step of an attach, so that
    # tests/faults can kill a container or delete its netns at exactly that point.
    attach_step: AttachStep | None = None
    # Long-lived, the engine's own: tc requests in the host; iterator runs inside each netns
    # (a slow one never delays an attach). Socket filters are made on the trio thread
    # (engine/attach/socket_filter.py): nothing there blocks.
    # Several threads: each tc request waits on the RTNL lock, which netns teardown holds for
    # tens of milliseconds under churn; one thread made every attach queue behind each wait
    # (at 100 netns/s the queue grew by seconds). Removals on threads of their own, so that
    # attaches never queue behind them.
    # At the trio thread's priority (engine/netns/priority.py): on the attach path too.
    rtnl: HostRtnl = attrs.Factory(lambda: HostRtnl(threads=RTNL_THREADS, callers_priority=True))
    detach_rtnl: HostRtnl = attrs.Factory(lambda: HostRtnl("host rtnetlink detach", threads=2))
    iter_worker: Worker = attrs.Factory(lambda: Worker("netns iterators"))
    closer: Closer = attrs.Factory(Closer)
    nsids: NsidClient = attrs.Factory(NsidClient)
    records: NetnsRecords = attrs.field(
        init=False,
        default=attrs.Factory(
            lambda self: NetnsRecords(self.loaded, self.emit, self.world, self.held),
            takes_self=True,
        ),
    )
    _iter_now: dict[int, _IterRound] = attrs.Factory(dict)
    _iter_links: dict[int, IterLink] = attrs.Factory(dict)  # by program fd
    _stopping: trio.Event = attrs.Factory(trio.Event)

    def _iter_link(self, program: LoadedProgram) -> IterLink:
        """One link per iterator program for every netns: only the read fd is made inside
        each (engine/attach/iterator.py)."""
        link = self._iter_links.get(program.fd)
        if link is None:
            link = self._iter_links[program.fd] = IterLink.attach(program.fd, program.spec.function)
        return link

    def start(self) -> None:
        """What every netns will use, made now (on the trio thread, in the host netns): the
        threads of the tc workers with their sockets, and each iterator program's link. Made
        as the first netns needed each, they were one more thread, socket or link the first
        time a netns had a veth to detach or a socket to iterate, at any time in a run."""
        kinds = {program.spec.kind for _, program in self.programs()}
        if Kind.CLASSIFIER in kinds:
            self.rtnl.start()
            self.detach_rtnl.start()
        if Kind.ITER in kinds:
            self.iter_worker.start()
        for _, program in self.programs():
            if program.spec.kind is Kind.ITER:
                # One that cannot be made now is tried (and reported) by each netns's run.
                with contextlib.suppress(AttachError):
                    self._iter_link(program)

    async def aclose(self) -> None:
        """Once every netns task has ended: the workers and sockets go (idempotent)."""
        with trio.CancelScope(shield=True):
            await self.rtnl.aclose()
            await self.detach_rtnl.aclose()
        await self.iter_worker.aclose()
        await self.closer.aclose()
        for link in self._iter_links.values():
            await link.aclose()
        self._iter_links.clear()
        await self.nsids.aclose()

    def programs(self) -> list[tuple[LoadedGadget, LoadedProgram]]:
        """Per-netns programs in attach order: socket filters first, as they can attach the
        moment a netns exists, then classifiers, which wait for the runtime's veth."""
        found = [(g, p) for g in self.loaded for p in g.programs.values() if p.spec.per_netns]
        return sorted(found, key=lambda gp: _ATTACH_ORDER[gp[1].spec.kind])

    def reconcile(self, desired: dict[int, NetnsTarget]) -> int:
        """Start and stop netns tasks so that they match ``desired``; return how many changed."""
        gone = [(inode, None, False) for inode in self.running if inode not in desired]
        return self.apply([*gone, *((inode, t, False) for inode, t in desired.items())])

    def apply(self, changes: list[tuple[int, NetnsTarget | None, bool]]) -> int:
        """Start and stop netns tasks as ``World.desired_changes`` says (each netns's target,
        or None; and whether the netns of that inode was replaced by another); return how
        many tasks were started or stopped."""
        if not self.programs():
            return 0
        count = 0
        for inode, target, replaced in changes:
            state = self.running.get(inode)
            if state is not None and (target is None or replaced):
                self.running.pop(inode).scope.cancel()
                count += 1
                state = None
            if target is None:
                continue
            if state is not None:
                state.target = target
                continue
            # The task reads the live state: names in its records follow identification.
            # Started, not waited for: a burst of netns must not start one at a time.
            state = NetnsState(target, trio.CancelScope(), time.monotonic())
            self.running[inode] = state
            self.nursery.start_soon(self._netns_task, state)
            count += 1
        return count

    def wind_down(self) -> None:
        """Let every netns task end by itself: an attach under way is finished, an iterator
        run is completed, then the task detaches everything and returns (the engine's stop).
        """
        self._stopping.set()
        for round_ in self._iter_now.values():
            round_.wake.set()

    async def run_iterators(self) -> None:
        """Run every netns's iterators now; return when each has written its records."""
        rounds = list(self._iter_now.values())
        for round_ in rounds:
            round_.wake.set()
        for round_ in rounds:
            await round_.done.wait()

    async def _step(self, name: str, target: NetnsTarget) -> None:
        if self.attach_step is not None:
            await self.attach_step(name, target)

    async def _netns_task(self, state: NetnsState) -> None:
        # Cancelled before it ran, it still reports each program (``_attach_all``).
        with state.scope:
            await self._attach_all(state)

    async def _attach_all(self, state: NetnsState) -> None:
        # Programs without a record yet: if the netns stops being traced before they are
        # attached, each still gets its one `attach_failed`, so that every program ends with
        # `attached` then `detached`, or with `attach_failed`.
        # A `finally`, not `except trio.Cancelled`: a cancellation that passes through a
        # nursery (trio.run_process, for one) arrives as an exception group, and the records
        # of the programs still pending were lost then.
        pending = [program for _, program in self.programs()]
        try:
            await self._attach_and_run(state, pending)
        finally:
            problem = (
                "the netns stopped being traced during the attach"
                if state.scope.cancel_called
                else "the attach ended unexpectedly"
            )
            self.records.failed_all(pending, state.target, problem)

    async def _attach_and_run(self, state: NetnsState, pending: list[LoadedProgram]) -> None:
        target = state.target
        await self._step("open", target)
        try:
            # An open of an nsfs file: nothing to wait for, no thread needed.
            handle = NetnsHandle.open(target.path)
        except OSError as exc:
            for program in pending:
                self.records.failed(
                    program,
                    target,
                    None,
                    AttachError.from_os(
                        program.spec.function, "netns is gone", exc, netns=target.label
                    ),
                )
            pending.clear()
            return
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(handle.aclose)
            if handle.id.inode != target.inode:
                self.records.failed_all(
                    pending, target, "the netns path now leads to another netns"
                )
                pending.clear()
                return
            programs = self.programs()
            classifiers = [p for _, p in programs if p.spec.kind is Kind.CLASSIFIER]
            iterators = [(g, p) for g, p in programs if p.spec.kind is Kind.ITER]
            for _, program in iterators:
                pending.remove(program)  # they have no record of their own but a failure
            # The socket filters and the classifiers at once: they wait on different things
            # (a thread inside the netns; the veth, then the host's RTNL lock), and the
            # classifiers used to start only once the socket filters were in.
            await self._step("attach", state.target)
            async with trio.open_nursery() as nursery:
                if classifiers:
                    nursery.start_soon(self._attach_tc, stack, classifiers, handle, state, pending)
                for _, program in programs:
                    if program.spec.kind is Kind.SOCKET:
                        await self._attach_socket(stack, program, handle, state)
                        pending.remove(program)
            await self._step("attached", state.target)
            state.attached_at = time.monotonic()
            if iterators:
                await self._iterate(iterators, handle, state)
            else:
                await self._stopping.wait()

    async def _attach_socket(
        self,
        stack: contextlib.AsyncExitStack,
        program: LoadedProgram,
        handle: NetnsHandle,
        state: NetnsState,
    ) -> None:
        try:
            await stack.enter_async_context(
                attach_socket_filter(
                    program.fd,
                    program.spec.function,
                    handle,
                    closer=self.closer,
                )
            )
        except AttachError as exc:
            self.records.failed(program, state.target, exc.interface, exc)
        else:
            self.records.attached(stack, program, "socket", handle.id, None, state)

    async def _attach_tc(
        self,
        stack: contextlib.AsyncExitStack,
        programs: list[LoadedProgram],
        handle: NetnsHandle,
        state: NetnsState,
        pending: list[LoadedProgram],
    ) -> None:
        classifiers = NetnsClassifiers(
            self.world,
            self.rtnl,
            self.detach_rtnl,
            self.nsids,
            self._stopping,
            self.links,
            self.preattach,
            self.nsid_of,
        )
        netns: NetnsId = handle.id

        def report(
            program: LoadedProgram, interface: str | None, error: AttachError | None
        ) -> None:
            # Out of ``pending`` as soon as it has its record: a cancellation between two
            # veths must not add an `attach_failed` to an `attached`.
            if program in pending:
                pending.remove(program)
            if error is not None:
                self.records.failed(program, state.target, interface, error)
            else:
                kind = f"classifier/{program.spec.section.parts[0]}"
                self.records.attached(stack, program, kind, netns, interface, state)

        async def step(name: str) -> None:
            await self._step(name, state.target)

        await classifiers.attach(stack, programs, handle, state.target, report, step)

    async def _iterate(
        self,
        iterators: list[tuple[LoadedGadget, LoadedProgram]],
        handle: NetnsHandle,
        state: NetnsState,
    ) -> None:
        round_ = _IterRound()
        inode = state.target.inode
        self._iter_now[inode] = round_  # a request during the first run waits for it
        try:
            while True:
                for gadget, program in iterators:
                    await self._run_iterator(gadget, program, handle, state.target)
                round_.done.set()
                if self._stopping.is_set():
                    return
                # A request made from now on is answered by the next run.
                round_ = _IterRound()
                self._iter_now[inode] = round_
                with trio.move_on_after(self.iter_interval):
                    await round_.wake.wait()
                if self._stopping.is_set():
                    return
        finally:
            self._iter_now.pop(inode, None)
            round_.done.set()

    async def _run_iterator(
        self, gadget: LoadedGadget, program: LoadedProgram, handle: NetnsHandle, target: NetnsTarget
    ) -> None:
        try:
            raw = await run_iter_in_netns(
                self._iter_link(program),
                handle,
                worker=self.iter_worker,
                target=program.spec.target,
            )
        except AttachError as exc:
            self.records.failed(program, target, None, exc)
            return
        self.records.iterator_events(gadget, program, raw, target)
