"""Classifiers attached to a container's host-side veth before the container's netns has it.

Docker creates a container's veth pair in the host netns, puts one end on its bridge at
once, and moves the other end into the container's netns only just before the container's
process starts, 0-2.6 s later (162 ms p50 measured under churn). Waiting for the move, then
finding the peer and adding the filters, took 60-85 ms after the netns appeared: the first
packet was often gone. So when a veth whose peer is still in the host netns becomes a bridge
port, every classifier program is attached to it at once ("pre-attached"), owned here.

CNI plugins (a Kubernetes node's bridge plugin) make the pair inside the container's netns
instead, the host end on the bridge: that veth is pre-attached as soon as its first link
message is read, before the engine has seen the netns and started its task (the time a churn
of 100 netns/s spends between the netns's bind mount and its task: tens of milliseconds at
p99, benchmarks/README.md). Not when the peer's netns is known and not traced.

All the programs go in one rtnetlink request, as a netns task adds them (each request waits
on the RTNL lock). When a netns task then finds that veth as its container's host-side peer,
it ``take``s the filters: their exit stack is handed over whole, so the filters stay in
place and the netns task owns them from then on (records as for any attachment: the `attached`
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

from engine.attach.tc import Classifier, Direction, HostPeer, TcFilter, attach_classifiers
from engine.bcc.loader import LoadedProgram
from engine.errors import AttachError
from engine.netns import LinkWatcher, VethLink
from engine.netns.worker import HostRtnl
from engine.world.state import World

log = logging.getLogger(__name__)

# How long a pre-attached veth waits for a netns task to take it. Under churn the engine
# falls behind and netns tasks start up to ~10 s after their netns appears (20/s, measured).
CLAIM_WAIT = 10.0


def veth_classifiers(
    programs: list[LoadedProgram],
    peer: HostPeer,
    *,
    rtnl: HostRtnl | None,
    detach_rtnl: HostRtnl | None,
    links: LinkWatcher | None,
    netns: str | None = None,
    clsact_there: bool = False,
) -> contextlib.AbstractAsyncContextManager[list[TcFilter | AttachError]]:
    """``attach_classifiers`` for loaded classifier programs on one veth, as netns tasks and
    pre-attach both add them: one request, removals through ``detach_rtnl``, and none asked
    for once ``links`` says the veth is gone (its filters went with it)."""
    wanted = [
        Classifier(p.fd, p.spec.function, Direction(p.spec.section.parts[0])) for p in programs
    ]

    def still_there(tc_filter: TcFilter) -> bool:
        return links is None or links.has(tc_filter.host_ifindex, tc_filter.host_ifname)

    return attach_classifiers(
        wanted,
        peer,
        netns=netns,
        rtnl=rtnl,
        detach_rtnl=detach_rtnl,
        still_there=still_there,
        clsact_there=clsact_there,
    )


@attrs.define(eq=False)
class _Veth:
    """The pre-attached filters of one host-side veth, until taken."""

    host_ifindex: int
    peer_ifindex: int
    ready: trio.Event = attrs.Factory(trio.Event)  # every program tried
    done: trio.Event = attrs.Factory(trio.Event)  # taken, or the veth is gone
    stack: contextlib.AsyncExitStack | None = None  # owns the filters until taken
    fds: frozenset[int] = frozenset()  # the programs whose filter is in place


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
    detach_rtnl: HostRtnl | None = None  # removals, apart from attaches
    links: LinkWatcher | None = None  # says when a veth is gone (its filters with it)
    # Whether the netns of a peer's id (in the host) is, or may become, traced.
    may_trace: Callable[[int], bool] = lambda _nsid: True
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
            or not veth.peer_ifindex
            or veth.ifindex in self._tried
            or veth.ifindex in self.world.host_ifindexes  # a netns task has it already
        ):
            return
        # Its peer in a netns already (made there by a CNI plugin, or moved in since): only
        # while that netns may be traced. Asked last: once per new pair, not per message.
        nsid = veth.peer_nsid
        if nsid is not None and (nsid < 0 or not self.may_trace(nsid)):
            return
        self._tried.add(veth.ifindex)
        held = _Veth(veth.ifindex, veth.peer_ifindex)
        self._veths[veth.ifindex] = held
        self.world.preattached.add(veth.ifindex)
        self.nursery.start_soon(self._hold, held, veth.ifname)

    async def take(self, peer: HostPeer) -> tuple[contextlib.AsyncExitStack, frozenset[int]] | None:
        """The pre-attached filters on ``peer``'s host side, if there are any, and the fds of
        the programs they are for: the caller owns them from now on (enter the returned stack
        into its own) and attaches the other programs itself."""
        # By host ifindex alone: the container's end may get another index when it is moved.
        held = self._veths.get(peer.host_ifindex)
        if held is None:
            return None
        await held.ready.wait()  # an attach under way ends within milliseconds
        stack, held.stack = held.stack, None
        held.done.set()
        if stack is None:  # taken already, or removed (unclaimed in time, or its veth gone)
            return None
        return stack, held.fds

    async def _hold(self, held: _Veth, ifname: str) -> None:
        peer = HostPeer(held.peer_ifindex, ifname, held.host_ifindex)
        try:
            with trio.move_on_after(self.claim_wait):
                await self._attach(held, peer)
                if held.fds:
                    await held.done.wait()
        finally:
            held.ready.set()
            left, held.stack = held.stack, None
            if left is not None:
                with trio.CancelScope(shield=True):
                    await left.aclose()
                if held.fds:
                    log.debug("pre-attached %s: filters removed, unclaimed", ifname)
            # A new pair may have taken the index of this deleted one meanwhile: it is its own.
            if self._veths.get(held.host_ifindex) is held:
                del self._veths[held.host_ifindex]
                self.world.preattached.discard(held.host_ifindex)
                self.settled(held.host_ifindex)

    async def _attach(self, held: _Veth, peer: HostPeer) -> None:
        """Every program on the veth in one request, as a netns task adds them."""
        # Owned from before the attach: closed if cancelled.
        held.stack = stack = contextlib.AsyncExitStack()
        results = await stack.enter_async_context(
            veth_classifiers(
                self.programs,
                peer,
                rtnl=self.rtnl,
                detach_rtnl=self.detach_rtnl,
                links=self.links,
            )
        )
        for program, result in zip(self.programs, results, strict=True):
            if isinstance(result, AttachError):
                # The netns task attaches it the usual way, and reports a failure then.
                log.debug("pre-attach of %s on %s failed: %s", program.spec.function, peer, result)
        held.fds = frozenset(
            p.fd for p, r in zip(self.programs, results, strict=True) if isinstance(r, TcFilter)
        )
        held.ready.set()
