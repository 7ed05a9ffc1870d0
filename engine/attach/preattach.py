"""Classifiers attached to a container's host-side veth before the container's netns has it.

Docker creates a container's veth pair in the host netns, puts one end on its bridge at
once, and moves the other end into the container's netns only just before the container's
process starts, 0-2.6 s later (162 ms p50 measured under churn). Waiting for the move, then
finding the peer and adding the filters, took 60-85 ms after the netns appeared: the first
packet was often gone. So when a veth whose peer is still in the host netns becomes a bridge
port, every classifier program is attached to it at once ("pre-attached"), owned here.

When a netns task then finds that veth as its container's host-side peer, it ``take``s the
filter of each program: the filter's exit stack is handed over whole, so the filter stays in
place and the netns task owns it from then on (records as for any attachment: the `attached`
record is emitted when it is handed). Filters nobody takes are removed when the veth is
deleted, or after ``CLAIM_WAIT`` seconds (a veth of some other tool, or a netns that is not
traced). They carry the engine's usual names, so orphan cleanup finds them after a SIGKILL.

Only veths are touched: never a physical interface, never the bridge itself.

Records a pre-attached filter writes before it is handed name a host ifindex that no netns
claims yet: the world holds them (``World.preattached``) until the veth is handed or released
(``settled``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import attrs
import trio

from engine.attach import Direction, HostPeer, attach_classifier
from engine.bcc.loader import LoadedProgram
from engine.errors import AttachError
from engine.netns import VethLink
from engine.netns.worker import HostRtnl
from engine.world.state import World

log = logging.getLogger(__name__)

# How long a pre-attached veth waits for a netns task to take it. Under churn the engine
# falls behind and netns tasks start up to ~10 s after their netns appears (20/s, measured).
CLAIM_WAIT = 10.0


@attrs.define(eq=False)
class _Veth:
    """The pre-attached filters of one host-side veth, by program fd, until taken."""

    host_ifindex: int
    peer_ifindex: int
    ready: trio.Event = attrs.Factory(trio.Event)  # every program tried
    done: trio.Event = attrs.Factory(trio.Event)  # all taken, or the veth is gone
    stacks: dict[int, contextlib.AsyncExitStack] = attrs.Factory(dict)


@attrs.define
class PreAttacher:
    programs: list[LoadedProgram]  # the classifier programs
    nursery: trio.Nursery
    world: World
    # Told (with the host ifindex) each time a veth stops being pre-attached-and-unclaimed,
    # whether handed to a netns (``World.host_ifindexes`` has it then) or released.
    settled: Callable[[int], None] = lambda _ifindex: None
    claim_wait: float = CLAIM_WAIT
    rtnl: HostRtnl | None = None  # the engine's rtnetlink worker
    _veths: dict[int, _Veth] = attrs.Factory(dict)
    # Veths pre-attached once already: their later changes (up, carrier...) are not new pairs.
    _tried: set[int] = attrs.Factory(set)

    def on_veth(self, veth: VethLink) -> None:
        """A link message about a veth of the host netns (LinkWatcher.on_veth)."""
        if veth.deleted:
            self._tried.discard(veth.ifindex)
            held = self._veths.get(veth.ifindex)
            if held is not None:
                held.done.set()
            return
        if (
            not veth.bridge_port
            or not veth.peer_here
            or not veth.peer_ifindex
            or veth.ifindex in self._tried
            or veth.ifindex in self.world.host_ifindexes  # a netns task has it already
        ):
            return
        self._tried.add(veth.ifindex)
        held = _Veth(veth.ifindex, veth.peer_ifindex)
        self._veths[veth.ifindex] = held
        self.world.preattached.add(veth.ifindex)
        self.nursery.start_soon(self._hold, held, veth.ifname)

    async def take(
        self, peer: HostPeer, program: LoadedProgram
    ) -> contextlib.AsyncExitStack | None:
        """The pre-attached filter of ``program`` on ``peer``'s host side, if there is one:
        the caller owns it from now on (enter the returned stack into its own)."""
        # By host ifindex alone: the container's end may get another index when it is moved.
        held = self._veths.get(peer.host_ifindex)
        if held is None:
            return None
        await held.ready.wait()  # an attach under way ends within milliseconds
        stack = held.stacks.pop(program.fd, None)
        if not held.stacks:
            held.done.set()
        return stack

    async def _hold(self, held: _Veth, ifname: str) -> None:
        peer = HostPeer(held.peer_ifindex, ifname, held.host_ifindex)
        try:
            with trio.move_on_after(self.claim_wait):
                await self._attach(held, peer)
                if held.stacks:
                    await held.done.wait()
        finally:
            held.ready.set()
            left = list(held.stacks.values())
            held.stacks.clear()
            with trio.CancelScope(shield=True):
                for stack in left:
                    await stack.aclose()
            if left:
                log.debug("pre-attached %s: %d filters removed, unclaimed", ifname, len(left))
            # A new pair may have taken the index of this deleted one meanwhile: it is its own.
            if self._veths.get(held.host_ifindex) is held:
                del self._veths[held.host_ifindex]
                self.world.preattached.discard(held.host_ifindex)
                self.settled(held.host_ifindex)

    async def _attach(self, held: _Veth, peer: HostPeer) -> None:
        for program in self.programs:
            direction = Direction(program.spec.section.parts[0])
            stack = contextlib.AsyncExitStack()
            held.stacks[program.fd] = stack  # owned from before the attach: closed if cancelled
            try:
                await stack.enter_async_context(
                    attach_classifier(
                        program.fd,
                        program.spec.function,
                        peer,
                        direction,
                        rtnl=self.rtnl,
                        clsact_there=bool(held.stacks.keys() - {program.fd}),
                    )
                )
            except AttachError as exc:
                # The netns task attaches it the usual way, and reports a failure then.
                del held.stacks[program.fd]
                log.debug("pre-attach of %s on %s failed: %s", program.spec.function, peer, exc)
        held.ready.set()
