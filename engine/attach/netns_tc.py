"""The classifiers of one traced netns, on the host side of each of its veths.

The netns's host-side peers are looked up once for all its classifier programs, and the
filters of one veth that were not pre-attached (engine/attach/preattach.py) are added in one
rtnetlink request: each request waits on the RTNL lock, which netns teardown holds for
milliseconds at a time, so one round trip per veth instead of one per program. Removals go
through a worker of their own, and are not asked for at all once the host's link table says
the veth is gone (its filters went with it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import attrs
import trio

from engine.attach.preattach import PreAttacher, veth_classifiers
from engine.attach.tc import (
    HostPeer,
    find_host_peers,
)
from engine.bcc.loader import LoadedProgram
from engine.errors import AttachError
from engine.netns import LinkWatcher, NetnsHandle, NetnsId, NsidClient
from engine.netns.worker import HostRtnl
from engine.world.state import NetnsTarget, World

# How long a new netns may take to receive its veth before classifiers give up on it.
PEER_WAIT = 3.0

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
        programs: list[LoadedProgram],
        handle: NetnsHandle,
        target: NetnsTarget,
        report: Report,
        step: Step,
    ) -> None:
        """Every program on each host-side peer, owned by ``stack``; each outcome reported."""
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
            results = await self._on_peer(stack, programs, peer, target)
            for program in programs:
                report(program, peer.host_ifname, results.get(program.fd))

    async def _on_peer(
        self,
        stack: contextlib.AsyncExitStack,
        programs: list[LoadedProgram],
        peer: HostPeer,
        target: NetnsTarget,
    ) -> dict[int, AttachError]:
        """Attach every program on one veth; the errors, by program fd."""
        # Attached ahead of the netns: taken over as they are, so the filters are never off
        # while the container starts.
        handed = await self.preattach.take(peer) if self.preattach else None
        there: frozenset[int] = frozenset()
        if handed is not None:
            taken, there = handed
            await stack.enter_async_context(taken)
        rest = [p for p in programs if p.fd not in there]
        if not rest:
            return {}
        added = await stack.enter_async_context(
            veth_classifiers(
                rest,
                peer,
                netns=target.label,
                rtnl=self.rtnl,
                detach_rtnl=self.detach_rtnl,
                links=self.links,
                clsact_there=len(rest) < len(programs),
            )
        )
        return {p.fd: r for p, r in zip(rest, added, strict=True) if isinstance(r, AttachError)}

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
