"""The world feeder: the runtimes' sources (Docker, containerd, podman) and the netns source
into the world, and every change acted on.

``Tracker.run`` starts the sources, takes in what they listed at start (each hands its
snapshot back through ``task_status.started``) and the first attachments under way, and only
then reports itself started; from there it follows their records. Each change settles the
netns pending identification (their held records released or dropped), brings the gadgets'
in-kernel selection maps up to date and reconciles the per-netns attachments.
"""

from __future__ import annotations

import logging

import attrs
import trio

from engine.attach import owner_alive, remove_orphan_filters
from engine.attach.per_netns import PerNetns
from engine.bcc.loader import LoadedGadget
from engine.events.outlet import Outlet
from engine.gadget.sections import Kind
from engine.records import (
    ContainerAdded,
    ContainerEvent,
    ContainerRemoved,
    Event,
    Lost,
    NetnsAdded,
    NetnsEvent,
    NetnsRemoved,
    ProgramRecord,
)
from engine.sources.netns import NetnsSource
from engine.sources.runtimes import Runtimes, start_all
from engine.world.held import Held, Taken
from engine.world.kernel_filter import kernel_selection, sync_filter
from engine.world.state import Identified, Verdict, World, preattached_key

log = logging.getLogger(__name__)

# Room for a burst of changes; a full channel makes a source wait (it never drops).
SOURCE_CHANNEL = 256


@attrs.define
class Tracker:
    """Feeds the world from the runtimes' and netns sources and acts on every change."""

    world: World
    per_netns: PerNetns
    loaded: list[LoadedGadget]
    outlet: Outlet
    held: Held
    reconcile_interval: float = 30.0
    corrections: int = 0
    netns_source: NetnsSource = attrs.Factory(NetnsSource)
    runtimes: Runtimes = attrs.Factory(Runtimes)
    _lock: trio.Lock = attrs.Factory(trio.Lock)
    _pending_added: trio.Event = attrs.Factory(trio.Event)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # A mount namespace that starts pending (engine/world/mntns.py) has a timeout to wait for.
        self.world.on_pending = self._pending_added_now
        self.per_netns.nsid_of = self.netns_source.nsid_of
        if any(p.spec.kind is Kind.CLASSIFIER for g in self.loaded for p in g.programs.values()):
            removed = await remove_orphan_filters(owner_alive)
            if removed:
                log.warning("removed %d tc filters left by engines that are gone", removed)
        containers_send, containers_receive = trio.open_memory_channel[ContainerEvent](
            SOURCE_CHANNEL
        )
        netns_send, netns_receive = trio.open_memory_channel[NetnsEvent](SOURCE_CHANNEL)
        async with trio.open_nursery() as nursery:
            netns_now: list[NetnsAdded] = await nursery.start(self.netns_source.run, netns_send)
            containers_now = await start_all(nursery, self.runtimes.sources(), containers_send)
            # What exists at start is in the world before the engine says it is ready, so that
            # the first attachments are under way.
            for netns in netns_now:
                self._apply_netns(netns)
            for container in containers_now:
                self._apply_container(container)
                self.outlet.put(container)
            await self.changed()
            task_status.started()
            nursery.start_soon(self._follow_containers, containers_receive)
            nursery.start_soon(self._follow_netns, netns_receive)
            nursery.start_soon(self._reconcile_periodically)
            nursery.start_soon(self._settle_on_timeouts)

    async def _follow_containers(self, channel: trio.MemoryReceiveChannel[ContainerEvent]) -> None:
        async for record in channel:
            self._apply_container(record)
            # The kernel's selection says what the world says before the record is out: a
            # consumer that sees `container_added` and then makes the container run something
            # finds its records refused or written as the selection says (a mount namespace
            # the kernel does not know yet passes it, to be held and judged here).
            async with self._lock:
                await self._sync_filters()
            self.outlet.put(record)
            await self.changed()

    async def _follow_netns(self, channel: trio.MemoryReceiveChannel[NetnsEvent]) -> None:
        async for record in channel:
            self._apply_netns(record)
            # The records already waiting go in with it, in order: one reconcile for the
            # batch, so that a burst costs the engine less per netns, not more.
            while True:
                try:
                    self._apply_netns(channel.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            await self.changed()

    def _apply_container(self, record: ContainerEvent) -> None:
        if isinstance(record, ContainerAdded):
            self.world.add_container(record.container)
        elif isinstance(record, ContainerRemoved):
            self.world.remove_container(record.container)
        elif hasattr(record, "container"):
            self.world.add_container(record.container)

    def _apply_netns(self, record: NetnsEvent) -> None:
        if isinstance(record, NetnsAdded):
            self.world.add_netns(
                record.netns_id.inode, record.path, trio.current_time(), record.existed
            )
            if self.world.is_pending(record.netns_id.inode):
                self._pending_added.set()
        elif isinstance(record, NetnsRemoved):
            self.world.remove_netns(record.netns_id.inode)
        self.outlet.put(record)

    async def changed(self, *, everything: bool = False) -> int:
        """Act on what changed (``everything``: on every netns, the periodic safety net)."""
        async with self._lock:
            # Settled first: the held records (attach records included) reach consumers
            # before the detach records of a netns that stops being traced.
            for identified in self.world.settle(trio.current_time()):
                self._release(identified)
            await self._sync_filters()
            changes = self.per_netns.apply(self.world.desired_changes())
            if everything:
                changes += self.per_netns.reconcile(self.world.desired_netns())
            return changes

    async def _sync_filters(self) -> None:
        """Every gadget's kernel selection as the world says (a no-op when unchanged)."""
        selection = kernel_selection(self.world)  # one pass over the containers for all
        for loaded in self.loaded:
            await sync_filter(loaded, self.world, selection)

    def _release(self, identified: Identified) -> None:
        """Hand over what a netns held while pending: named if kept, else dropped."""
        taken = self.held.take(identified.inode)
        container = identified.container
        name = None if container is None else container.name
        json = None if container is None else self.world.container_json(container)
        stats = self.outlet.stats
        for record in taken.records:
            if isinstance(record, Event):
                if identified.keep:
                    named = attrs.evolve(record, container=json)
                    self.outlet.deliver(record.gadget, record.source, [named])
                else:
                    stats.for_map(record.gadget, record.source).unselected += 1
            elif isinstance(record, ProgramRecord):
                # Real attachments of the engine: reported either way, with the container
                # they turned out to be (a speculative attach of an unselected container
                # ends in `attached` then `detached`).
                self.outlet.put(record if name is None else attrs.evolve(record, container=name))
            else:
                self.outlet.put(record)
        self._overflow(taken, keep=identified.keep)
        if taken.records or taken.overflow:
            log.debug(
                "netns %d identified (%s): %d held records %s",
                identified.inode,
                name,
                len(taken.records),
                "released" if identified.keep else "dropped (not selected)",
            )

    def may_trace_nsid(self, nsid: int) -> bool:
        """Whether the netns of this id (in the host) is, or may become, traced: one the
        netns source has not seen yet may be (engine/attach/preattach.py)."""
        ident = self.netns_source.netns_of_nsid(nsid)
        return self.world.may_trace(None if ident is None else ident.inode)

    def preattach_settled(self, ifindex: int) -> None:
        """A pre-attached veth was handed to a netns, or released: the events it wrote before
        wait under its own key; they now go where that netns's go (engine/attach/preattach.py).
        """
        taken = self.held.take(preattached_key(ifindex))
        if not taken.records and not taken.overflow:
            return
        # Every one of them names this ifindex and nothing else (that is why they were held).
        verdict, inode = (
            self.world.screen({"ifindex": ifindex})
            if ifindex in self.world.host_ifindexes
            else (Verdict.DROP, 0)  # nobody claimed it: never the user's
        )
        if verdict is Verdict.HOLD:
            self.held.merge(inode, taken)
            return
        stats = self.outlet.stats
        container = self.world.container_for({"ifindex": ifindex})
        json = None if container is None else self.world.container_json(container)
        for record in taken.records:
            if not isinstance(record, Event):
                continue  # only gadget events are held by veth
            if verdict is Verdict.DROP:
                stats.for_map(record.gadget, record.source).unselected += 1
            else:
                named = attrs.evolve(record, container=json)
                self.outlet.deliver(record.gadget, record.source, [named])
        self._overflow(taken, keep=verdict is not Verdict.DROP)

    def _overflow(self, taken: Taken, *, keep: bool) -> None:
        """The events a netns could not hold: lost when they were the user's, else dropped."""
        stats = self.outlet.stats
        for (gadget, source), count in taken.overflow.items():
            if keep:
                stats.for_map(gadget, source).lost_pending += count
                self.outlet.put(Lost(gadget, source, count, "pending"))
            else:
                stats.for_map(gadget, source).unselected += count

    def _pending_added_now(self) -> None:
        self._pending_added.set()

    async def _settle_on_timeouts(self) -> None:
        """Settle each pending netns when its identify timeout expires: sleeps until the
        earliest deadline, or until a netns becomes pending while none was."""
        while True:
            deadline = self.world.next_deadline()
            if deadline is None:
                await self._pending_added.wait()
                self._pending_added = trio.Event()
                continue
            await trio.sleep_until(deadline)
            await self.changed()

    async def _reconcile_periodically(self) -> None:
        while True:
            await trio.sleep(self.reconcile_interval)
            self.netns_source.recheck()
            corrected = await self.changed(everything=True)
            if corrected:
                self.corrections += corrected
                log.warning("reconciliation corrected %d netns attachments", corrected)
