"""One gadget's buffers turned into named records: decode, screen, name the container, deliver.

``open_reader`` sets up the gadget's ``BufferPump`` (engine.events.pump) with a batch handler
that decodes each raw record, asks the world whether it may reach consumers yet (held while
its netns is pending identification, dropped when it belongs to no selected container), names
its container, and hands the batch to the outlet.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from engine.bcc import libbcc
from engine.bcc.loader import LoadedGadget
from engine.events.decode import RecordDecoder, build_decoder, fields_from_bcc
from engine.events.outlet import Outlet
from engine.events.pump import BufferMap, BufferPump, buffer_maps
from engine.gadget.maps import iterator_only_maps, map_writers
from engine.records import Event, Lost, Record
from engine.world.held import Held
from engine.world.state import Verdict, World


def decoders(loaded: LoadedGadget, maps: Sequence[BufferMap]) -> dict[str, RecordDecoder]:
    lib = libbcc.lib()
    return {
        m.name: build_decoder(
            fields_from_bcc(lib, loaded.bpf.module, m.name), padding=loaded.padding
        )
        for m in maps
    }


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
    maps = [m for m in buffer_maps(libbcc.lib(), loaded.bpf.module) if m.name not in typing_only]
    if not maps:
        return None
    decode_by_map = decoders(loaded, maps)
    programs = {m.name: map_writers(gadget, m.name) for m in maps}
    gadget_name = gadget.name  # a property that parses the path: not once per record

    def on_batch(name: str, batch: list[bytes]) -> None:
        decode = decode_by_map[name].decode
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
        outlet.stats.for_map(gadget_name, name).lost_kernel += count
        outlet.put(Lost(gadget_name, name, count, "kernel"))

    pump = BufferPump(loaded.bpf, maps, on_batch, on_lost)
    stack.callback(pump.close)
    # Opening writes the perf buffer map (one reader fd per CPU): a table of the gadget.
    await loaded.call(pump.open)
    return pump
