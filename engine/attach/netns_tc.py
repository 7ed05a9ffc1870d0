"""The classifiers of one traced netns, on the host side of each of its veths.

The netns's host-side peers are looked up once for all its classifier programs, and the
filters of one veth that were not pre-attached (engine/attach/preattach.py) are added in one
rtnetlink request: each request waits on the RTNL lock, which netns teardown holds for
milliseconds at a time, so one round trip per veth instead of one per program.

Detaching asks for nothing when it need not: a netns that is gone takes its veth pair with it,
and the host veth's filters with the device. So the filters are owned by a stack of their own
(``filters``), closed after the netns task's ``stack``: that one writes the `detached`
records (while the netns, and so its inode, is still held: a new netns given the same inode
cannot mix its story with this one's) and closes what kept the netns alive (its handle and
sockets). Then the filters of a netns no longer reachable at its path wait up to
``VANISH_WAIT`` for the host's link table to say the veth is gone. Only a veth still there
after that (one that outlives its netns), or the filters of a netns that lives on (a container
no longer selected) or of a stopping engine, are removed by request, at once, through a worker
of their own. Each removal would take the RTNL lock that attaches wait on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import attrs
import trio

from engine.attach.preattach import PreAttacher
from engine.attach.tc import (
    Classifier,
    Direction,
    HostPeer,
    TcFilter,
    attach_classifiers,
    find_host_peers,
)
from engine.bcc.loader import LoadedProgram
from engine.errors import AttachError
from engine.netns import LinkWatcher, NetnsHandle, NetnsId, NsidClient
from engine.netns.handle import reaches
from engine.netns.worker import HostRtnl
from engine.world.state import NetnsTarget, World

# How long a new netns may take to receive its veth before classifiers give up on it.
PEER_WAIT = 3.0
# How long the filters of a gone netns wait for the kernel's teardown to delete its veth.
VANISH_WAIT = 2.0

# Told of each program's outcome on an interface (None: attached), in order.
Report = Callable[[LoadedProgram, str | None, AttachError | None], None]
Step = Callable[[str], Awaitable[None]]
NsidOf = Callable[[NetnsId], int | None]


@attrs.frozen
class NetnsClassifiers:
    """What attaching a netns's classifiers uses, all of it the engine's own."""

    world: World
    rtnl: HostRtnl
    detach_rtnl: HostRtnl
    nsids: NsidClient
    stopping: trio.Event
    links: LinkWatcher | None = None
    preattach: PreAttacher | None = None
    nsid_of: NsidOf | None = None  # the ids the netns source knows

    async def attach(  # noqa: PLR0917 - the netns task's own state, passed straight through
        self,
        stack: contextlib.AsyncExitStack,
        filters: contextlib.AsyncExitStack,
        programs: list[LoadedProgram],
        handle: NetnsHandle,
        target: NetnsTarget,
        report: Report,
        step: Step,
    ) -> None:
        """Every program on each host-side peer, owned by ``filters``; each outcome reported
        (the `detached` records go on ``stack``)."""
        try:
            peers = await self._wait_for_peers(handle, programs[0], target)
        except AttachError as exc:
            for program in programs:
                report(program, exc.interface, attrs.evolve(exc, function=program.spec.function))
            return
        for peer in peers:
            await step("add_filter")
            # Known before the filters run: their first records must name (or be held for)
            # this netns, never pass as nobody's.
            self.world.host_ifindexes[peer.host_ifindex] = target.inode
            stack.callback(self.world.forget_ifindex, peer.host_ifindex)
            results = await self._on_peer(filters, programs, peer, target, handle.id)
            for program in programs:
                report(program, peer.host_ifname, results.get(program.fd))

    async def _on_peer(
        self,
        stack: contextlib.AsyncExitStack,
        programs: list[LoadedProgram],
        peer: HostPeer,
        target: NetnsTarget,
        netns: NetnsId,
    ) -> dict[int, AttachError]:
        """Attach every program on one veth; the errors, by program fd."""
        rest = []
        for program in programs:
            # Attached ahead of the netns: taken over as it is, so the filter is never off
            # while the container starts.
            handed = await self.preattach.take(peer, program) if self.preattach else None
            if handed is not None:
                await stack.enter_async_context(handed)
            else:
                rest.append(program)
        if not rest:
            return {}
        wanted = [
            Classifier(p.fd, p.spec.function, Direction(p.spec.section.parts[0])) for p in rest
        ]
        added = await stack.enter_async_context(
            attach_classifiers(
                wanted,
                peer,
                netns=target.label,
                rtnl=self.rtnl,
                detach_rtnl=self.detach_rtnl,
                clsact_there=len(rest) < len(programs),
                left_over=lambda filters: self._left_over(filters, target.path, netns),
            )
        )
        return {p.fd: r for p, r in zip(rest, added, strict=True) if isinstance(r, AttachError)}

    def _there(self, filters: list[TcFilter]) -> list[TcFilter]:
        links = self.links
        return [f for f in filters if links is None or links.has(f.host_ifindex, f.host_ifname)]

    async def _left_over(
        self, filters: list[TcFilter], path: str, netns: NetnsId
    ) -> list[TcFilter]:
        """The filters to remove by request: for a gone netns, those whose veth is still
        there after ``VANISH_WAIT`` (or the engine stopping); else every one still there."""
        links = self.links
        if links is None or self.stopping.is_set() or reaches(path, netns):
            return self._there(filters)
        with trio.move_on_after(VANISH_WAIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_until_stopping, self.stopping, nursery.cancel_scope)
                for f in filters:
                    await links.wait_gone(f.host_ifindex, f.host_ifname)
                nursery.cancel_scope.cancel()
        return self._there(filters)

    async def _wait_for_peers(
        self, handle: NetnsHandle, program: LoadedProgram, target: NetnsTarget
    ) -> list[HostPeer]:
        """The host-side veth peers, waiting briefly for the runtime to move them in.

        A netns is often seen (its file appears) before the runtime has moved the container's
        end of the veth pair into it: look again at each interface change in the host (or
        every 0.2 s without a link watcher) for a short while before giving up.
        """
        deadline = trio.current_time() + PEER_WAIT
        while True:
            # Taken before looking, so that a change during the look is not missed.
            change = self.links.changed if self.links is not None else None
            try:
                return await find_host_peers(
                    handle,
                    program.spec.function,
                    links=self.links,
                    nsids=self.nsids,
                    nsid=self.nsid_of(handle.id) if self.nsid_of is not None else None,
                )
            except AttachError as exc:
                late = trio.current_time() >= deadline or self.stopping.is_set()
                if not exc.problem.startswith("no veth") or late:
                    raise
            with trio.move_on_after(0.2):
                if change is not None:
                    await change.wait()
                else:
                    await trio.sleep_forever()


async def _until_stopping(stopping: trio.Event, waiting: trio.CancelScope) -> None:
    await stopping.wait()
    waiting.cancel()
