"""The engine: composition only. Load gadgets, attach, pump records to consumers.

``open_engine`` is the public entry point::

    async with open_engine("gadget.c") as eng:
        async for record in eng.events():
            ...

Inside, nested nurseries, so that what must outlive something is started first and stopped
last: the outer one runs hooks and the user's tasks; in it, ``work`` runs the buffer pumps and
host iterators; in that, ``netns`` runs one task per traced netns; in that, ``sources`` runs
the runtimes' and netns sources, the world feeder and the link watcher. ``stop()`` cancels the
sources, asks every netns task to end (each finishes what it is doing, detaches and reports
it), then stops the readers, then the hooks; whatever has not ended ``STOP_GRACE`` seconds
after ``stop()`` is cancelled. Static programs are attached once, through an exit stack that
detaches them in reverse order when the engine stops.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path

import attrs
import trio

from engine.attach.host_iterators import HostIteratorRunner, host_iterators
from engine.attach.link_watch import watch_links
from engine.attach.per_netns import PerNetns
from engine.attach.startup import GadgetFailure, Startup, parse_gadgets, start_gadgets
from engine.bcc.loader import LoadedGadget, Supported, probed_support
from engine.errors import BadInputError, EngineStoppedError, sole_exception
from engine.events.batches import BatchStream
from engine.events.filter import RecordFilter
from engine.events.maps import MapOutput
from engine.events.outlet import Outlet
from engine.events.queue import RecordQueue
from engine.events.runs import Item, each_record, made
from engine.events.stats import Stats
from engine.gadget.model import Gadget
from engine.gadget.param_values import Values, resolve_values
from engine.gadget.tc_returns import tc_return_warnings
from engine.hooks.dispatch import DEFAULT_HOOK_BUFFER, Hooks
from engine.hooks.methods import HookMethods
from engine.kernel.security import check_all_trusted, require_capabilities
from engine.layers import Layers, run_work
from engine.netns import priority
from engine.records import GadgetFailed, Record
from engine.sources.containerd_api import DEFAULT_SOCKET as CONTAINERD_SOCKET
from engine.sources.podman import DEFAULT_SOCKET as PODMAN_SOCKET
from engine.sources.runtimes import Runtimes
from engine.world.held import Held
from engine.world.selection import Selection
from engine.world.state import DEFAULT_IDENTIFY_TIMEOUT, World
from engine.world.tracker import Tracker

log = logging.getLogger(__name__)

DEFAULT_BUFFER = 8192
# How long stop() lets the work end by itself (detaches reported) before cancelling it.
STOP_GRACE = 5.0


@attrs.define
class Engine(HookMethods):
    """A running engine. Obtain one with ``open_engine``; hooks: see ``HookMethods``."""

    gadgets: list[LoadedGadget]
    stats: Stats
    _queue: RecordQueue
    _outlet: Outlet
    _layers: Layers
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

    def events(self) -> AsyncIterator[Record]:
        """Every record, in order: gadget events and the engine's own records."""
        return each_record(self.unmade_runs())

    async def runs(self) -> AsyncIterator[list[Record]]:
        """What ``events()`` yields, as runs: all the records waiting at each moment, one
        scheduler pass per run."""
        async for run in self.unmade_runs():
            yield made(run)

    async def unmade_runs(self) -> AsyncIterator[list[Item]]:
        """``runs()`` with the events of a buffer's run of one task not made yet: an
        ``EventRun`` stands for them (engine/events/runs.py), for a writer that needs only
        their JSON lines (``engine run --output json``)."""
        take = self._queue.take
        while run := await take():
            yield run

    def batches(self, map: str | None = None) -> BatchStream:
        """Records of the buffer maps named ``map`` (None: every buffer map), many at a
        time, as columns (``Batch``, engine/events/batches.py): ``async for batch in
        eng.batches(): ...``. From this call on, those maps' records come here and not to
        ``events()`` or hooks, until the stream is closed (``async with``, ``aclose()``).
        Each stream gets every batch, up to ``BatchHub.size`` waiting, then loses batches
        (counted in ``stats``, reported as ``lost`` records). It ends when the engine stops."""
        if self._layers.stopping.is_set():
            raise EngineStoppedError("the engine has stopped: it has no more batches")
        return self._outlet.batches.add(map)

    def pending(self) -> int:
        """How many records wait in the engine's buffer for a consumer."""
        return len(self._queue)

    def leftover(self) -> list[Record]:
        """Records still buffered once the engine has stopped (the last detach records)."""
        return made(self._queue.take_nowait())

    def stop(self) -> None:
        """Stop the engine's work: detach per-netns programs, stop reading buffers.

        The work is asked to end (the sources are cancelled, the netns tasks finish and
        detach, then the readers stop); what has not ended ``STOP_GRACE`` seconds later is
        cancelled. The records still buffered (and the detach records) remain readable:
        ``events()`` yields them and then ends. Static probes detach when the ``async with``
        block exits. Idempotent.
        """
        layers = self._layers
        if layers.stopping.is_set():
            return
        layers.stopping.set()
        self.per_netns.wind_down()
        layers.work.cancel_scope.deadline = trio.current_time() + STOP_GRACE

    def set_selection(
        self, select: Sequence[str] = (), exclude: Sequence[str] = (), *, host: bool = False
    ) -> Selection:
        """See ``HookMethods.set_selection``; raises ``EngineStoppedError`` once stopped."""
        if self._layers.stopping.is_set():
            raise EngineStoppedError("the engine has stopped: its selection cannot change")
        return super().set_selection(select, exclude, host=host)


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
    maps: float | None = None,
    maps_clear: bool = False,
    docker_socket: str | None = None,
    containerd_socket: str = CONTAINERD_SOCKET,
    podman_socket: str = PODMAN_SOCKET,
    filter: Sequence[str] = (),
    padding: bool = False,
    params: Mapping[str, int | bool | str] | None = None,
    attach_nice: int | None = None,
    attach_realtime: int | None = None,
) -> AsyncIterator[Engine]:
    """Load and attach the gadgets; yield the running engine; detach everything on exit.

    ``select``/``exclude``/``host`` choose the traced containers (see ``Selection.parse``).
    ``strict=True`` makes a failing hook stop the engine with ``HookError`` (for tests);
    ``hook_buffer`` bounds each hook's queue of records. Containers are followed in Docker
    (``docker_socket``; None: ``$DOCKER_HOST`` or /var/run/docker.sock), containerd
    (``containerd_socket``; every namespace but Docker's ``moby``) and podman
    (``podman_socket``, its API service) at once; a runtime that is absent is retried, and
    ``source_connected``/``source_disconnected``/``source_reconnected`` records say how each
    is doing. ``containers=False`` runs without the runtimes' and netns sources (static
    probes only). Per-netns iterators run when a netns
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
    With ``maps`` (seconds), the gadgets' hash, array and histogram maps are emitted as
    ``MapSnapshot`` records every ``maps`` seconds and when the engine stops, emptied after
    each with ``maps_clear``; without it, the maps of gadgets that have no ring or perf buffer
    are emitted when the engine stops (engine.events.maps).
    ``filter`` expressions (engine.events.filter) keep only the events for which all hold,
    before hooks and ``events()``; a bad one raises ``FilterError`` before compiling.
    Records leave out their structs' padding members unless ``padding=True``.
    ``params`` (``{"NAME" or "GADGET:NAME": value}``, engine.gadget.param_values) are written
    before anything attaches; a bad one raises ``ParamError`` before compiling.
    ``attach_nice`` (e.g. ``priority.ATTACH_NICE``): the attach path's threads at that nice
    value (None, the default: unchanged; engine.netns.priority says what it costs);
    ``attach_realtime`` (e.g. ``priority.ATTACH_REALTIME``, 1-99), instead: those threads
    real-time (SCHED_FIFO at that priority).
    Once started, it calls ``gc.freeze()``: the objects that exist then (the process's, the
    engine's start-up) are left out of the garbage collector's passes from then on.
    """
    selection = Selection.parse(select, exclude, host)
    if not trust_files:
        check_all_trusted(g for g in gadgets if not isinstance(g, Gadget))
    parsed = parse_gadgets(gadgets, all_or_nothing=all_or_nothing)
    readable = [g for g in parsed if isinstance(g, Gadget)]
    record_filter = RecordFilter.parse(filter, readable)
    param_values = resolve_values(params or {}, readable)
    for gadget in readable:
        for warning in tc_return_warnings(gadget):
            log.warning("%s", warning)
    require_capabilities()
    if supported is None:
        supported = await probed_support()
    options = _Options(
        containers,
        iter_interval,
        reconcile_interval,
        all_or_nothing,
        identify_timeout,
        maps,
        maps_clear,
        Runtimes(docker_socket, containerd_socket, podman_socket),
        record_filter,
        padding,
        param_values,
        _attach_priority(attach_nice, attach_realtime),
    )
    try:
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
    except BaseExceptionGroup as group:
        # A lone error from inside the engine's nurseries reaches the user as itself.
        sole = sole_exception(group)
        if sole is group:
            raise
        raise sole from None


@attrs.frozen
class _Options:
    containers: bool
    iter_interval: float
    reconcile_interval: float
    all_or_nothing: bool
    identify_timeout: float = DEFAULT_IDENTIFY_TIMEOUT
    maps: float | None = None
    maps_clear: bool = False
    runtimes: Runtimes = attrs.Factory(Runtimes)
    record_filter: RecordFilter | None = None
    padding: bool = False
    params: Values = attrs.Factory(dict)
    attach_priority: priority.Priority | None = None


def _attach_priority(nice: int | None, realtime: int | None) -> priority.Priority | None:
    if nice is not None and realtime is not None:
        raise BadInputError("attach_nice and attach_realtime: one or the other, not both")
    if realtime is not None and not 1 <= realtime <= 99:
        raise BadInputError(f"attach_realtime: a SCHED_FIFO priority is 1-99, not {realtime}")
    if nice is None and realtime is None:
        return None
    return priority.Priority(nice=nice, realtime=realtime)


@contextlib.asynccontextmanager
async def _running(
    parsed: Sequence[Gadget | GadgetFailure],
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
        follows_containers=options.containers,
    )
    held = Held()
    queue = RecordQueue(buffer)
    stats = Stats()
    outlet = Outlet(queue, stats, reserve=buffer // 8)
    if options.record_filter is not None:
        outlet.keeps = options.record_filter.keeps
    hooks = Hooks(outlet.put, strict=strict, buffer=hook_buffer)
    outlet.tap = hooks
    async with contextlib.AsyncExitStack() as stack, trio.open_nursery() as nursery:
        stack.enter_context(priority.raised(options.attach_priority))
        hooks.bind(nursery)
        # The engine's own work runs in nurseries of its own, so that stop() ends it (and
        # the per-netns detaches report themselves) without cancelling the user's block;
        # when it has ended, the record queue is closed and ``events()`` ends.
        layers: Layers = await nursery.start(run_work, (queue, outlet.batches))
        work = layers.work
        startup = Startup(
            supported, stack, work, outlet, world, held, options.padding, options.params
        )
        loaded_all, failed = await start_gadgets(
            parsed, startup, all_or_nothing=options.all_or_nothing
        )
        host_iters = await stack.enter_async_context(host_iterators(loaded_all))
        runner = HostIteratorRunner(host_iters, outlet.deliver, options.iter_interval)
        for record in runner.attached():
            outlet.put(record)
        await work.start(runner.run)
        map_output = MapOutput.of(
            loaded_all, outlet, world, interval=options.maps, clear=options.maps_clear
        )
        if map_output.gadgets:
            await work.start(map_output.run)
        per_netns = PerNetns(
            loaded_all, outlet.put, layers.netns, world, options.iter_interval, held=held
        )
        # Unwound after the nurseries: every netns task has ended by then.
        stack.push_async_callback(per_netns.aclose)
        per_netns.start()
        tracker = Tracker(
            world,
            per_netns,
            loaded_all,
            outlet,
            held,
            options.reconcile_interval,
            runtimes=options.runtimes,
        )
        sources = layers.sources
        await watch_links(per_netns, tracker, sources, follow_containers=options.containers)
        if options.containers:
            await sources.start(tracker.run)
        engine = Engine(
            loaded_all,
            stats,
            queue,
            outlet,
            layers,
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
            sources.start_soon(tracker.changed)

        engine._selection_watchers.append(selection_changed)
        # What start-up made (bcc, BTF, the gadgets) lives as long as the engine: out of the
        # collector's sight. Full collections traversed all of it, and a flood of records
        # (each one a tracked object, thousands alive in the queue) made them frequent: 60 %
        # of events()'s time, and an 80 ms stall of attaches (benchmarks/README.md, Issue 16).
        gc.freeze()
        try:
            yield engine
        finally:
            engine.stop()
            # Hooks see the last detach records: they stop only once the work has ended,
            # which the grace deadline bounds; shielded, so that a cancelled block waits too.
            with trio.CancelScope(shield=True):
                await layers.done.wait()
            nursery.cancel_scope.cancel()


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None
