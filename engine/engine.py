"""The engine: composition only. Load gadgets, attach, pump records to consumers.

``open_engine`` is the public entry point::

    async with open_engine("gadget.c") as eng:
        async for record in eng.events():
            ...

Inside, one trio nursery runs the buffer pumps; static programs are attached once, through
an exit stack that detaches them in reverse order when the engine stops.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from engine.attach.host_iterators import HostIteratorRunner, host_iterators
from engine.attach.per_netns import PerNetns
from engine.attach.preattach import PreAttacher
from engine.attach.static import static_attacher
from engine.bcc import libbcc
from engine.bcc.loader import LoadedGadget, check_supported, load_gadget
from engine.errors import EngineError, GadgetError, GadgetParseError, GadgetsFailedError
from engine.events.decode import RecordDecoder, build_decoder, fields_from_bcc
from engine.events.pump import BufferMap, BufferPump, buffer_maps
from engine.gadget.maps import iterator_only_maps, map_writers
from engine.gadget.model import Gadget
from engine.gadget.sections import Kind
from engine.gadget.tc_returns import tc_return_warnings
from engine.hooks.dispatch import DEFAULT_HOOK_BUFFER, Hooks
from engine.hooks.methods import HookMethods
from engine.kernel import skb_netns
from engine.kernel.features import probe_features
from engine.kernel.security import check_all_trusted, require_capabilities
from engine.netns import LinkWatcher
from engine.records import (
    ContainerAdded,
    ContainerEvent,
    ContainerRemoved,
    Event,
    GadgetFailed,
    Lost,
    NetnsAdded,
    NetnsEvent,
    NetnsRemoved,
    ProgramAttached,
    ProgramRecord,
    ProgramSkipped,
    Record,
)
from engine.sources.docker import DockerSource
from engine.sources.netns import NetnsSource
from engine.world.held import Held
from engine.world.selection import Selection
from engine.world.state import DEFAULT_IDENTIFY_TIMEOUT, Identified, Verdict, World, preattached_key

log = logging.getLogger(__name__)

DEFAULT_BUFFER = 8192

Supported = Callable[[Kind], tuple[bool, str]]


async def probed_support() -> Supported:
    """What this kernel runs, probed with tiny real loads (engine.kernel.features)."""
    features = await trio.to_thread.run_sync(probe_features)

    def supported(kind: Kind) -> tuple[bool, str]:
        support = features.supports(kind)
        return support.available, support.reason

    return supported


@attrs.define
class MapStats:
    """Counts for one buffer map."""

    received: int = 0
    delivered: int = 0
    lost_kernel: int = 0
    lost_engine: int = 0
    lost_pending: int = 0  # held for a netns pending identification, over the bound
    # Read from a netns traced speculatively that turned out not to be the user's (or was
    # never identified): dropped, not lost, since they were never the user's records.
    unselected: int = 0

    def to_json(self) -> dict[str, int]:
        return attrs.asdict(self)


@attrs.define
class Stats:
    maps: dict[tuple[str, str], MapStats] = attrs.Factory(dict)  # (gadget, map)

    def for_map(self, gadget: str, name: str) -> MapStats:
        return self.maps.setdefault((gadget, name), MapStats())

    @property
    def delivered(self) -> int:
        return sum(m.delivered for m in self.maps.values())

    @property
    def lost(self) -> int:
        return sum(m.lost_kernel + m.lost_engine + m.lost_pending for m in self.maps.values())


@attrs.define
class _Outlet:
    """Puts records on the bounded channel; never blocks the kernel readers.

    Buffer events never take the last ``reserve`` places of the channel: those are kept for
    the engine's own records (containers, attachments, losses), so that a flood of events
    cannot crowd them out while the consumer is behind.
    """

    send: trio.MemorySendChannel[Record]
    stats: Stats
    reserve: int = 0
    pending_lost: dict[tuple[str, str], int] = attrs.Factory(dict)
    # Sees every record, also those the channel refuses: hooks do not depend on the consumer.
    tap: Callable[[Record], None] | None = None

    def put(self, record: Record, *, leave: int = 0) -> bool:
        """Send ``record`` unless fewer than ``leave`` + 1 places are free."""
        if self.tap is not None:
            self.tap(record)
        if leave:
            used = self.send.statistics()
            if used.current_buffer_used + leave >= used.max_buffer_size:
                return False
        try:
            self.send.send_nowait(record)
        except trio.WouldBlock:
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    def deliver(self, gadget: str, source: str, records: list[Record]) -> None:
        stats = self.stats.for_map(gadget, source)
        key = (gadget, source)
        # Loss reports take half the reserve at most: the other half stays for lifecycle
        # records. A report that does not fit waits, still counting, for the next batch.
        if self.pending_lost.get(key) and self.put(
            Lost(gadget, source, self.pending_lost[key], "engine"), leave=self.reserve // 2
        ):
            del self.pending_lost[key]
        dropped = 0
        for record in records:
            if self.put(record, leave=self.reserve):
                stats.delivered += 1
            else:
                dropped += 1
        if dropped:
            stats.lost_engine += dropped
            self.pending_lost[key] = self.pending_lost.get(key, 0) + dropped


@attrs.define
class Engine(HookMethods):
    """A running engine. Obtain one with ``open_engine``; hooks: see ``HookMethods``."""

    gadgets: list[LoadedGadget]
    stats: Stats
    _receive: trio.MemoryReceiveChannel[Record]
    _cancel: trio.CancelScope
    _hooks: Hooks
    _nursery: trio.Nursery
    selection: Selection
    world: World
    per_netns: PerNetns
    _selection_watchers: list[Callable[[Selection], None]] = attrs.Factory(list)
    _host_iterators: HostIteratorRunner | None = None
    # The gadgets that could not run (the others do): see ``open_engine(all_or_nothing=...)``.
    failed: list[GadgetFailed] = attrs.Factory(list)

    async def run_iterators(self) -> None:
        """Run every iterator now, host and per-netns (they also run on an interval)."""
        if self._host_iterators is not None:
            await self._host_iterators.run_once()
        await self.per_netns.run_iterators()

    async def events(self) -> AsyncIterator[Record]:
        """Every record, in order: gadget events and the engine's own records."""
        # receive() is one pass through the scheduler per record, while the pump fills the
        # channel a whole batch at a time: take what is buffered without yielding to the
        # scheduler, and wait only when the channel is empty.
        receive = self._receive
        while True:
            try:
                record = receive.receive_nowait()
            except trio.WouldBlock:
                try:
                    record = await receive.receive()
                except trio.EndOfChannel:
                    return
            except trio.EndOfChannel:
                return
            yield record

    def pending(self) -> int:
        """How many records wait in the engine's buffer for a consumer."""
        return self._receive.statistics().current_buffer_used

    def leftover(self) -> list[Record]:
        """Records still buffered once the engine has stopped (the last detach records)."""
        out: list[Record] = []
        while True:
            try:
                out.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return out

    def stop(self) -> None:
        """Stop the engine's work: detach per-netns programs, stop reading buffers.

        The records still buffered (and the detach records) remain readable: ``events()``
        yields them and then ends. Static probes detach when the ``async with`` block exits.
        """
        self._cancel.cancel()


def _decoders(loaded: LoadedGadget, maps: Sequence[BufferMap]) -> dict[str, RecordDecoder]:
    lib = libbcc.lib()
    return {m.name: build_decoder(fields_from_bcc(lib, loaded.bpf.module, m.name)) for m in maps}


@contextlib.asynccontextmanager
async def open_engine(
    *gadgets: str | Path | Gadget,
    buffer: int = DEFAULT_BUFFER,
    supported: Supported | None = None,
    select: Sequence[str] = (),
    exclude: Sequence[str] = (),
    host: bool = False,
    strict: bool = False,
    hook_buffer: int = DEFAULT_HOOK_BUFFER,
    containers: bool = True,
    iter_interval: float = 10.0,
    reconcile_interval: float = 30.0,
    trust_files: bool = False,
    all_or_nothing: bool = False,
    identify_timeout: float = DEFAULT_IDENTIFY_TIMEOUT,
) -> AsyncIterator[Engine]:
    """Load and attach the gadgets; yield the running engine; detach everything on exit.

    ``select``/``exclude``/``host`` choose the traced containers (see ``Selection.parse``).
    ``strict=True`` makes a failing hook stop the engine with ``HookError`` (for tests);
    ``hook_buffer`` bounds each hook's queue of records. ``containers=False`` runs without
    the Docker and netns sources (static probes only). Per-netns iterators run when a netns
    is attached and then every ``iter_interval`` seconds; the picture of containers and
    netns is reconciled every ``reconcile_interval`` seconds against missed events.
    With a selection, a container runtime's new netns is traced at once, before the runtime
    says whose it is, for up to ``identify_timeout`` seconds; its records are held until then
    and released if its container is selected (docs/events.md, "Speculative attach").
    Gadget files that anyone but root (or this user) could change are refused with
    ``UntrustedFileError`` unless ``trust_files=True``; missing capabilities raise
    ``MissingCapabilitiesError`` before anything is compiled (see ``engine.kernel.security``).
    A gadget that cannot be parsed, compiled, loaded or attached is reported (a
    ``GadgetFailed`` record, a log line) and the others run without it; when every gadget
    fails, its error is raised (``GadgetsFailedError`` for several). ``all_or_nothing=True``
    raises the first failure instead, and nothing runs.
    """
    selection = Selection.parse(select, exclude, host)
    if not trust_files:
        check_all_trusted(g for g in gadgets if not isinstance(g, Gadget))
    parsed: list[Gadget | _Failure] = []
    for g in gadgets:
        if isinstance(g, Gadget):
            parsed.append(g)
            continue
        try:
            parsed.append(Gadget.from_file(g))
        except (GadgetError, GadgetParseError) as exc:
            if all_or_nothing:
                raise
            parsed.append(_Failure(Path(g).stem, str(g), exc))
    for gadget in parsed:
        if isinstance(gadget, Gadget):
            for warning in tc_return_warnings(gadget):
                log.warning("%s", warning)
    require_capabilities()
    if supported is None:
        supported = await probed_support()
    with unwrap_single_exception():
        options = _Options(
            containers, iter_interval, reconcile_interval, all_or_nothing, identify_timeout
        )
        async with _running(
            parsed,
            buffer,
            supported,
            selection=selection,
            strict=strict,
            hook_buffer=hook_buffer,
            options=options,
        ) as engine:
            yield engine


@attrs.frozen
class _Options:
    containers: bool
    iter_interval: float
    reconcile_interval: float
    all_or_nothing: bool
    identify_timeout: float = DEFAULT_IDENTIFY_TIMEOUT


@attrs.frozen
class _Failure:
    """A gadget that could not run, and why."""

    name: str
    path: str
    error: EngineError

    def report(self, outlet: _Outlet) -> GadgetFailed:
        log.error("gadget %s (%s) failed, the others go on: %s", self.name, self.path, self.error)
        record = GadgetFailed.from_error(self.name, self.path, self.error)
        outlet.put(record)
        return record


@contextlib.contextmanager
def unwrap_single_exception() -> Iterator[None]:
    """A lone error from inside the engine's nursery reaches the user as itself."""
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


async def _watch_links(per_netns: PerNetns, tracker: _Tracker, work: trio.Nursery) -> None:
    """With classifiers: follow the host's links, so that they attach as soon as a veth is
    in its netns, and (when containers are followed) pre-attach to new veths."""
    classifiers = [p for _, p in per_netns.programs() if p.spec.kind is Kind.CLASSIFIER]
    if not classifiers:
        return
    per_netns.links = LinkWatcher()
    if tracker.options.containers:
        per_netns.preattach = PreAttacher(
            classifiers, work, tracker.world, settled=tracker.preattach_settled
        )
        per_netns.links.on_veth = per_netns.preattach.on_veth
    await work.start(per_netns.links.run)


@contextlib.asynccontextmanager
async def _running(
    parsed: Sequence[Gadget | _Failure],
    buffer: int,
    supported: Supported,
    *,
    selection: Selection,
    strict: bool,
    hook_buffer: int,
    options: _Options,
) -> AsyncIterator[Engine]:
    world = World(
        selection,
        host_netns=_inode("/proc/self/ns/net"),
        host_mntns=_inode("/proc/self/ns/mnt"),
        identify_timeout=options.identify_timeout,
    )
    held = Held()
    send, receive = trio.open_memory_channel[Record](buffer)
    stats = Stats()
    outlet = _Outlet(send, stats, reserve=buffer // 8)
    hooks = Hooks(outlet.put, strict=strict, buffer=hook_buffer)
    outlet.tap = hooks.dispatch
    async with contextlib.AsyncExitStack() as stack, trio.open_nursery() as nursery:
        hooks.bind(nursery)
        # The engine's own work runs in a nursery of its own, so that stop() ends it (and
        # the per-netns detaches report themselves) without cancelling the user's block;
        # when it has ended, the record channel is closed and ``events()`` ends.
        work: trio.Nursery = await nursery.start(_work_nursery, send)
        loaded_all: list[LoadedGadget] = []
        failures: list[_Failure] = []
        for item in parsed:
            if isinstance(item, _Failure):
                failures.append(item)
                continue
            try:
                loaded_all.append(
                    await _start_gadget(item, supported, stack, work, outlet, (world, held))
                )
            except EngineError as exc:
                if options.all_or_nothing:
                    raise
                failures.append(_Failure(item.name, item.path, exc))
        if failures and not loaded_all:
            errors = [f.error for f in failures]
            raise errors[0] if len(errors) == 1 else GadgetsFailedError(errors)
        failed = [f.report(outlet) for f in failures]
        host_iters = await stack.enter_async_context(host_iterators(loaded_all))
        runner = HostIteratorRunner(host_iters, outlet.deliver, options.iter_interval)
        for it in host_iters:
            spec = it.program.spec
            outlet.put(
                ProgramAttached(
                    gadget=it.loaded.gadget.name,
                    program=spec.function,
                    kind="iter",
                    target=spec.target,
                )
            )
        await work.start(runner.run)
        per_netns = PerNetns(loaded_all, outlet.put, work, world, options.iter_interval, held=held)
        tracker = _Tracker(world, per_netns, loaded_all, outlet, options, held)
        await _watch_links(per_netns, tracker, work)
        if options.containers:
            await work.start(tracker.run)
        engine = Engine(
            loaded_all,
            stats,
            receive,
            work.cancel_scope,
            hooks,
            nursery,
            selection,
            world,
            per_netns,
            host_iterators=runner,
            failed=failed,
        )

        def selection_changed(selection: Selection) -> None:
            # The in-kernel filter and the per-netns attachments follow at once.
            world.selection = selection
            work.start_soon(tracker.changed)

        engine._selection_watchers.append(selection_changed)
        try:
            yield engine
        finally:
            work.cancel_scope.cancel()
            nursery.cancel_scope.cancel()


async def _work_nursery(
    send: trio.MemorySendChannel[Record],
    *,
    task_status: trio.TaskStatus[trio.Nursery] = trio.TASK_STATUS_IGNORED,
) -> None:
    try:
        async with trio.open_nursery() as work:
            task_status.started(work)
            await trio.sleep_forever()
    finally:
        send.close()


async def _start_gadget(  # noqa: PLR0917 - the engine's parts this gadget plugs into
    gadget: Gadget,
    supported: Supported,
    stack: contextlib.AsyncExitStack,
    work: trio.Nursery,
    outlet: _Outlet,
    picture: tuple[World, Held],
) -> LoadedGadget:
    """Compile, load and attach one gadget, its buffers read in ``work``; what it holds is
    released by ``stack``. On failure, whatever it had set up is released at once."""
    world, held = picture
    skipped = check_supported(gadget, supported)
    attached: list[Record] = []
    async with contextlib.AsyncExitStack() as own:
        extra = await trio.to_thread.run_sync(skb_netns.extra_source, gadget)
        loaded = await load_gadget(gadget, skipped=skipped, extra_source=extra)
        own.callback(loaded.close)
        _sync_filter(loaded, world)
        # Readers exist before anything is attached (a perf buffer drops records written
        # before its reader); they are watched once the whole gadget is up.
        pump = _open_pump(loaded, outlet, own, world, held)
        for program in loaded.programs.values():
            attacher = static_attacher(program.spec.kind)
            if attacher is None or program.spec.per_netns:
                continue
            await own.enter_async_context(attacher(loaded, program))
            attached.append(
                ProgramAttached(
                    gadget=gadget.name,
                    program=program.spec.function,
                    kind=program.spec.kind.value,
                    target=program.spec.target,
                )
            )
        if pump is not None:
            await work.start(pump.run)
        stack.push_async_exit(own.pop_all())
    for s in skipped:
        outlet.put(ProgramSkipped(gadget.name, s.spec.function, s.spec.kind.value, s.reason))
    for record in attached:
        outlet.put(record)
    return loaded


def _open_pump(
    loaded: LoadedGadget,
    outlet: _Outlet,
    stack: contextlib.AsyncExitStack,
    world: World,
    held: Held,
) -> BufferPump | None:
    gadget = loaded.gadget
    typing_only = iterator_only_maps(gadget)
    maps = [m for m in buffer_maps(libbcc.lib(), loaded.bpf.module) if m.name not in typing_only]
    if not maps:
        return None
    decoders = _decoders(loaded, maps)
    programs = {m.name: map_writers(gadget, m.name) for m in maps}

    gadget_name = gadget.name  # a property that parses the path: not once per record

    def on_batch(name: str, batch: list[bytes]) -> None:
        decode = decoders[name].decode
        program = programs[name]
        container_for, container_json, screen = (
            world.container_for,
            world.container_json,
            world.screen,
        )
        stats = outlet.stats.for_map(gadget_name, name)
        stats.received += len(batch)
        records: list[Record] = []
        for raw in batch:
            data = decode(raw)
            verdict, inode = screen(data)
            if verdict is Verdict.HOLD:
                held.hold_event(inode, Event(gadget_name, name, program, data))
                continue
            if verdict is Verdict.DROP:
                stats.unselected += 1
                continue
            container = container_for(data)
            records.append(
                Event(
                    gadget_name,
                    name,
                    program,
                    data,
                    None if container is None else container_json(container),
                )
            )
        outlet.deliver(gadget_name, name, records)

    def on_lost(name: str, count: int) -> None:
        outlet.stats.for_map(gadget.name, name).lost_kernel += count
        outlet.put(Lost(gadget.name, name, count, "kernel"))

    pump = BufferPump(loaded.bpf, maps, on_batch, on_lost)
    stack.callback(pump.close)
    pump.open()
    return pump


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _sync_filter(loaded: LoadedGadget, world: World) -> None:
    """Make the gadget's in-kernel selection maps say what the world says."""
    import ctypes as ct

    try:
        flag = loaded.bpf.get_table("engine_filter")
        ids = loaded.bpf.get_table("engine_mntns")
    except KeyError:
        return
    flag[ct.c_int(0)] = ct.c_uint(0 if world.selection.selects_everything else 1)
    wanted = world.selected_mntns()
    present = {int(k.value) for k in ids}
    for gone in present - wanted:
        with contextlib.suppress(KeyError):
            del ids[ct.c_ulonglong(gone)]
    for new in wanted - present:
        ids[ct.c_ulonglong(new)] = ct.c_ubyte(1)


@attrs.define
class _Tracker:
    """Feeds the world from the Docker and netns sources and acts on every change."""

    world: World
    per_netns: PerNetns
    loaded: list[LoadedGadget]
    outlet: _Outlet
    options: _Options
    held: Held
    corrections: int = 0
    netns_source: NetnsSource = attrs.Factory(NetnsSource)
    _lock: trio.Lock = attrs.Factory(trio.Lock)
    _pending_added: trio.Event = attrs.Factory(trio.Event)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        from engine.attach import owner_alive, remove_orphan_filters

        if any(p.spec.kind is Kind.CLASSIFIER for g in self.loaded for p in g.programs.values()):
            removed = await remove_orphan_filters(owner_alive)
            if removed:
                log.warning("removed %d tc filters left by engines that are gone", removed)
        docker_send, docker_receive = trio.open_memory_channel[ContainerEvent](256)
        netns_send, netns_receive = trio.open_memory_channel[NetnsEvent](256)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.netns_source.run, netns_send)
            await nursery.start(DockerSource().run, docker_send)
            # What the sources listed at start is in the channels: take it in before saying
            # the engine is ready, so that the first attachments are under way.
            await self._drain(docker_receive, netns_receive)
            task_status.started()
            nursery.start_soon(self._follow_docker, docker_receive)
            nursery.start_soon(self._follow_netns, netns_receive)
            nursery.start_soon(self._reconcile_periodically)
            nursery.start_soon(self._settle_on_timeouts)

    async def _drain(
        self,
        docker: trio.MemoryReceiveChannel[ContainerEvent],
        netns: trio.MemoryReceiveChannel[NetnsEvent],
    ) -> None:
        for channel, apply in ((netns, self._apply_netns), (docker, self._apply_docker)):
            while True:
                try:
                    record = channel.receive_nowait()
                except trio.WouldBlock:
                    break
                apply(record)
        await self.changed()

    async def _follow_docker(self, channel: trio.MemoryReceiveChannel[ContainerEvent]) -> None:
        async for record in channel:
            self._apply_docker(record)
            await self.changed()

    async def _follow_netns(self, channel: trio.MemoryReceiveChannel[NetnsEvent]) -> None:
        async for record in channel:
            self._apply_netns(record)
            await self.changed()

    def _apply_docker(self, record: Any) -> None:
        if isinstance(record, ContainerAdded):
            self.world.add_container(record.container)
        elif isinstance(record, ContainerRemoved):
            self.world.remove_container(record.container.id)
        elif hasattr(record, "container"):
            self.world.add_container(record.container)
        self.outlet.put(record)

    def _apply_netns(self, record: Any) -> None:
        if isinstance(record, NetnsAdded):
            self.world.add_netns(record.netns_id.inode, record.path, trio.current_time())
            if self.world.is_pending(record.netns_id.inode):
                self._pending_added.set()
        elif isinstance(record, NetnsRemoved):
            self.world.remove_netns(record.netns_id.inode)
        self.outlet.put(record)

    async def changed(self) -> int:
        async with self._lock:
            # Settled first: the held records (attach records included) reach consumers
            # before the detach records of a netns that stops being traced.
            for identified in self.world.settle(trio.current_time()):
                self._release(identified)
            for loaded in self.loaded:
                _sync_filter(loaded, self.world)
            return await self.per_netns.reconcile(self.world.desired_netns())

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
        for (gadget, source), count in taken.overflow.items():
            if identified.keep:
                stats.for_map(gadget, source).lost_pending += count
                self.outlet.put(Lost(gadget, source, count, "pending"))
            else:
                stats.for_map(gadget, source).unselected += count
        if taken.records or taken.overflow:
            log.debug(
                "netns %d identified (%s): %d held records %s",
                identified.inode,
                name,
                len(taken.records),
                "released" if identified.keep else "dropped (not selected)",
            )

    def preattach_settled(self, ifindex: int) -> None:
        """A pre-attached veth was handed to a netns, or released: the events it wrote before
        wait under its own key; they now go where that netns's go (engine/preattach.py)."""
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
        for (gadget, source), count in taken.overflow.items():
            if verdict is Verdict.DROP:
                stats.for_map(gadget, source).unselected += count
            else:
                stats.for_map(gadget, source).lost_pending += count
                self.outlet.put(Lost(gadget, source, count, "pending"))

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
            await trio.sleep(self.options.reconcile_interval)
            self.netns_source.recheck()
            corrected = await self.changed()
            if corrected:
                self.corrections += corrected
                log.warning("reconciliation corrected %d netns attachments", corrected)
