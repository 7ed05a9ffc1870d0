"""One gadget from source to running, once, when the engine starts.

Compiled and loaded (engine.bcc.loader), its in-kernel selection maps written
(engine.world.kernel_filter), the reader of its buffers opened (engine.events.reader), its
static programs attached (engine.attach.static); its per-netns programs wait for their netns
(engine.attach.per_netns).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs
import trio

from engine.attach.static import static_attacher
from engine.bcc.loader import LoadedGadget, Supported, check_supported, load_gadget
from engine.bcc.params import params_source, write_params
from engine.errors import EngineError, GadgetError, GadgetParseError, GadgetsFailedError
from engine.events.outlet import Outlet
from engine.events.reader import open_reader
from engine.gadget.model import Gadget
from engine.gadget.param_values import Values
from engine.kernel import skb_netns
from engine.records import GadgetFailed, ProgramAttached, ProgramSkipped, Record
from engine.world.held import Held
from engine.world.kernel_filter import sync_filter
from engine.world.state import World

log = logging.getLogger(__name__)


@attrs.frozen
class GadgetFailure:
    """A gadget that could not run, and why."""

    name: str
    path: str
    error: EngineError

    def report(self, outlet: Outlet) -> GadgetFailed:
        log.error("gadget %s (%s) failed, the others go on: %s", self.name, self.path, self.error)
        record = GadgetFailed.from_error(self.name, self.path, self.error)
        outlet.put(record)
        return record


def parse_gadgets(
    gadgets: Iterable[str | Path | Gadget], *, all_or_nothing: bool
) -> list[Gadget | GadgetFailure]:
    """Each gadget parsed, or why it cannot be (raised at once with ``all_or_nothing``)."""
    parsed: list[Gadget | GadgetFailure] = []
    for g in gadgets:
        if isinstance(g, Gadget):
            parsed.append(g)
            continue
        try:
            parsed.append(Gadget.from_file(g))
        except (GadgetError, GadgetParseError) as exc:
            if all_or_nothing:
                raise
            parsed.append(GadgetFailure(Path(g).stem, str(g), exc))
    return parsed


@attrs.frozen
class Startup:
    """What every gadget's start-up uses: the kernel's support, where its buffers are read
    (``work``) and what releases what it holds (``stack``), and the engine's rooms."""

    supported: Supported
    stack: contextlib.AsyncExitStack
    work: trio.Nursery
    outlet: Outlet
    world: World
    held: Held
    padding: bool = False
    # Per gadget name, the values given to its parameters (engine.gadget.param_values).
    params: Values = attrs.Factory(dict)


async def start_gadgets(
    parsed: Sequence[Gadget | GadgetFailure], startup: Startup, *, all_or_nothing: bool
) -> tuple[list[LoadedGadget], list[GadgetFailed]]:
    """Start every gadget that can run; report the others (``gadget_failed``).

    When none can run, the error is raised (``GadgetsFailedError`` for several); with
    ``all_or_nothing`` the first failure is.
    """
    loaded: list[LoadedGadget] = []
    failures = [item for item in parsed if isinstance(item, GadgetFailure)]
    for item in parsed:
        if isinstance(item, GadgetFailure):
            continue
        try:
            loaded.append(await start_gadget(item, startup))
        except EngineError as exc:
            if all_or_nothing:
                raise
            failures.append(GadgetFailure(item.name, item.path, exc))
    if failures and not loaded:
        errors = [f.error for f in failures]
        raise errors[0] if len(errors) == 1 else GadgetsFailedError(errors)
    return loaded, [f.report(startup.outlet) for f in failures]


async def start_gadget(gadget: Gadget, startup: Startup) -> LoadedGadget:
    """Compile, load and attach one gadget, its buffers read in ``work``; what it holds is
    released by ``stack``. On failure, whatever it had set up is released at once. Its
    parameters hold their defaults, with the values given over them, before anything attaches."""
    outlet, world = startup.outlet, startup.world
    skipped = check_supported(gadget, startup.supported)
    attached: list[Record] = []
    async with contextlib.AsyncExitStack() as own:
        extra = params_source(gadget.params)
        extra += await trio.to_thread.run_sync(skb_netns.extra_source, gadget)
        loaded = await load_gadget(
            gadget, skipped=skipped, extra_source=extra, padding=startup.padding
        )
        own.callback(loaded.close)
        await sync_filter(loaded, world)
        if gadget.params:
            await write_params(loaded, startup.params.get(gadget.name, {}))
        # Readers exist before anything is attached (a perf buffer drops records written
        # before its reader); they are watched once the whole gadget is up.
        pump = await open_reader(loaded, outlet, world, startup.held, own)
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
            await startup.work.start(pump.run)
        startup.stack.push_async_exit(own.pop_all())
    for s in loaded.skipped:
        outlet.put(ProgramSkipped(gadget.name, s.spec.function, s.spec.kind.value, s.reason))
    for record in attached:
        outlet.put(record)
    return loaded
