"""One gadget's buffers turned into named records: decode, place, deliver.

``open_reader`` sets up the gadget's ``BufferPump`` (engine.events.pump) with a batch handler
that has each map's ``MapNamer`` (engine/events/naming.py) read each raw record's origin
(engine/events/origin.py) and decode the gadget's own record after it, ask the world where it
came from and whether it may reach consumers yet (engine/world/placement.py: held while its
namespace is pending identification, dropped when it belongs to no selected container) and
name its container; the batch goes to the outlet. The maps a ``batches()`` consumer wants
are read as columnar batches instead (engine/events/batches.py). On every tick it reads the
kernel's counts (engine/events/kernel_counts.py): records the kernel could not write become
``lost`` records, those it refused count as unselected.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import trio

from engine.bcc import libbcc
from engine.bcc.loader import LoadedGadget
from engine.bcc.origin_prelude import COUNTS_MAP
from engine.errors import GadgetError
from engine.events.batches import BatchMaker
from engine.events.decode import RecordDecoder, build_decoder, fields_from_bcc
from engine.events.kernel_counts import KernelCounts
from engine.events.naming import MapNamer
from engine.events.outlet import Outlet
from engine.events.pump import BufferMap, BufferPump, buffer_maps
from engine.events.ringbuf import RecordRun
from engine.gadget.maps import iterator_only_maps, map_writers
from engine.records import Lost
from engine.world.held import Held
from engine.world.state import World


def decoders(loaded: LoadedGadget, maps: Sequence[BufferMap]) -> dict[str, RecordDecoder]:
    lib = libbcc.lib()
    return {
        m.name: build_decoder(
            fields_from_bcc(lib, loaded.bpf.module, m.name), padding=loaded.padding
        )
        for m in maps
    }


def _check_rewritten(loaded: LoadedGadget, maps: Sequence[BufferMap]) -> None:
    """Every buffer map bcc made is one whose writes carry an origin."""
    for m in maps:
        if m.name not in loaded.outputs:
            raise GadgetError(
                loaded.gadget.path,
                f"buffer map {m.name!r} is not declared with BPF_RINGBUF_OUTPUT or "
                "BPF_PERF_OUTPUT in the gadget's own code (a macro?): the engine cannot give "
                "its records an origin",
            )


async def open_reader(
    loaded: LoadedGadget,
    outlet: Outlet,
    world: World,
    held: Held,
    stack: contextlib.AsyncExitStack,
) -> BufferPump | None:
    """The pump of ``loaded``'s ring and perf buffers, open (closed by ``stack``), not yet
    running; None when the gadget has no buffer to read."""
    gadget = loaded.gadget
    typing_only = iterator_only_maps(gadget)
    every_map = buffer_maps(libbcc.lib(), loaded.bpf.module)
    _check_rewritten(loaded, every_map)
    maps = [m for m in every_map if m.name not in typing_only]
    if not maps:
        return None
    gadget_name = gadget.name  # a property that parses the path: not once per record
    by_map = decoders(loaded, maps)
    writers = {name: map_writers(gadget, name) for name in by_map}
    namers = {n: MapNamer(gadget_name, n, writers[n], d, world) for n, d in by_map.items()}
    makers = {n: BatchMaker(namer) for n, namer in namers.items()}
    columnar = outlet.batches.wants

    def on_records(name: str, records: list[bytes] | RecordRun) -> None:
        """A read of map ``name``: raw records, or a run of one size (``BufferPump``)."""
        stats = outlet.stats.for_map(gadget_name, name)
        stats.received += records.count if isinstance(records, RecordRun) else len(records)
        now = trio.current_time()
        if columnar(name):
            maker = makers[name]
            columns = (
                maker.from_run(records, now, held, stats)
                if isinstance(records, RecordRun)
                else maker.from_records(records, now, held, stats)
            )
            if columns is not None:
                outlet.deliver_batch(columns)
            return
        namer = namers[name]
        named = (
            namer.name_run(records, now, held, stats)
            if isinstance(records, RecordRun)
            else namer.name(records, now, held, stats)
        )
        outlet.deliver(gadget_name, name, named)

    counts: list[KernelCounts] = []

    def on_tick() -> None:
        for changed in counts[0].read():
            stats = outlet.stats.for_map(gadget_name, changed.map)
            stats.unselected_kernel += changed.unselected
            stats.unselected += changed.unselected
            if changed.lost:
                stats.lost_kernel += changed.lost
                outlet.put(Lost(gadget_name, changed.map, changed.lost, "kernel"))

    pump = BufferPump(loaded.bpf, maps, on_records, on_tick, on_run=on_records)
    stack.callback(pump.close)

    def open_all() -> None:
        # Opening writes the perf buffer map (one reader fd per CPU): a table of the gadget.
        pump.open()
        table = loaded.bpf.get_table(COUNTS_MAP)
        counts.append(KernelCounts.open(libbcc.lib(), table, loaded.outputs.values()))

    await loaded.call(open_all)
    return pump
