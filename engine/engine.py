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
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from engine import libbcc
from engine.attach_static import static_attacher
from engine.decode import RecordDecoder, build_decoder, fields_from_bcc
from engine.gadget import Gadget
from engine.hooks import DEFAULT_HOOK_BUFFER, HookMethods, Hooks
from engine.loader import LoadedGadget, check_supported, load_gadget
from engine.pump import BufferMap, BufferPump, buffer_maps
from engine.records import Event, Lost, ProgramAttached, ProgramSkipped, Record
from engine.sections import Kind
from engine.selection import Selection

log = logging.getLogger(__name__)

DEFAULT_BUFFER = 8192

Supported = Callable[[Kind], tuple[bool, str]]


def _everything_supported(_kind: Kind) -> tuple[bool, str]:
    return True, ""


@attrs.define
class MapStats:
    """Counts for one buffer map."""

    received: int = 0
    delivered: int = 0
    lost_kernel: int = 0
    lost_engine: int = 0

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
        return sum(m.lost_kernel + m.lost_engine for m in self.maps.values())


def map_writers(gadget: Gadget, map_name: str) -> str | None:
    """The one program whose body names ``map_name``, if exactly one does."""
    users = []
    pattern = re.compile(rf"\b{re.escape(map_name)}\s*\.")
    for spec in gadget.programs:
        body = _body_of(gadget.source, spec.function)
        if body is not None and pattern.search(body):
            users.append(spec.function)
    return users[0] if len(users) == 1 else None


def _body_of(source: str, function: str) -> str | None:
    match = re.search(rf"\b{re.escape(function)}\s*\([^;{{]*\)\s*\{{", source)
    if match is None:
        return None
    depth, i = 1, match.end()
    while i < len(source) and depth:
        depth += {"{": 1, "}": -1}.get(source[i], 0)
        i += 1
    return source[match.end() : i]


@attrs.define
class _Outlet:
    """Puts records on the bounded channel; never blocks the kernel readers."""

    send: trio.MemorySendChannel[Record]
    stats: Stats
    pending_lost: dict[tuple[str, str], int] = attrs.Factory(dict)
    # Sees every record, also those the channel refuses: hooks do not depend on the consumer.
    tap: Callable[[Record], None] | None = None

    def put(self, record: Record) -> bool:
        if self.tap is not None:
            self.tap(record)
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
        if self.pending_lost.get(key) and self.put(
            Lost(gadget, source, self.pending_lost[key], "engine")
        ):
            del self.pending_lost[key]
        dropped = 0
        for record in records:
            if self.put(record):
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
    _selection_watchers: list[Callable[[Selection], None]] = attrs.Factory(list)

    async def events(self) -> AsyncIterator[Record]:
        """Every record, in order: gadget events and the engine's own records."""
        async for record in self._receive:
            yield record

    def pending(self) -> int:
        """How many records wait in the engine's buffer for a consumer."""
        return self._receive.statistics().current_buffer_used

    def stop(self) -> None:
        """Stop the engine; the ``async with`` block's records end."""
        self._cancel.cancel()


def _decoders(loaded: LoadedGadget, maps: Sequence[BufferMap]) -> dict[str, RecordDecoder]:
    lib = libbcc.lib()
    return {m.name: build_decoder(fields_from_bcc(lib, loaded.bpf.module, m.name)) for m in maps}


@contextlib.asynccontextmanager
async def open_engine(
    *gadgets: str | Path | Gadget,
    buffer: int = DEFAULT_BUFFER,
    supported: Supported = _everything_supported,
    select: Sequence[str] = (),
    exclude: Sequence[str] = (),
    host: bool = False,
    strict: bool = False,
    hook_buffer: int = DEFAULT_HOOK_BUFFER,
) -> AsyncIterator[Engine]:
    """Load and attach the gadgets; yield the running engine; detach everything on exit.

    ``select``/``exclude``/``host`` choose the traced containers (see ``Selection.parse``).
    ``strict=True`` makes a failing hook stop the engine with ``HookError`` (for tests);
    ``hook_buffer`` bounds each hook's queue of records.
    """
    selection = Selection.parse(select, exclude, host)
    parsed = [g if isinstance(g, Gadget) else Gadget.from_file(g) for g in gadgets]
    with unwrap_single_exception():
        async with _running(
            parsed, buffer, supported, selection=selection, strict=strict, hook_buffer=hook_buffer
        ) as engine:
            yield engine


@contextlib.contextmanager
def unwrap_single_exception() -> Iterator[None]:
    """A lone error from inside the engine's nursery reaches the user as itself."""
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


@contextlib.asynccontextmanager
async def _running(
    parsed: Sequence[Gadget],
    buffer: int,
    supported: Supported,
    *,
    selection: Selection,
    strict: bool,
    hook_buffer: int,
) -> AsyncIterator[Engine]:
    send, receive = trio.open_memory_channel[Record](buffer)
    stats = Stats()
    outlet = _Outlet(send, stats)
    hooks = Hooks(outlet.put, strict=strict, buffer=hook_buffer)
    outlet.tap = hooks.dispatch
    async with contextlib.AsyncExitStack() as stack, trio.open_nursery() as nursery:
        hooks.bind(nursery)
        loaded_all: list[LoadedGadget] = []
        for gadget in parsed:
            skipped = check_supported(gadget, supported)
            loaded = await load_gadget(gadget, skipped=skipped)
            stack.callback(loaded.close)
            loaded_all.append(loaded)
            for s in skipped:
                outlet.put(
                    ProgramSkipped(gadget.name, s.spec.function, s.spec.kind.value, s.reason)
                )
            await _start_pump(loaded, outlet, stack, nursery)
            for program in loaded.programs.values():
                attacher = static_attacher(program.spec.kind)
                if attacher is None or program.spec.per_netns:
                    continue
                await stack.enter_async_context(attacher(loaded, program))
                outlet.put(
                    ProgramAttached(
                        gadget.name,
                        program.spec.function,
                        program.spec.kind.value,
                        program.spec.target,
                    )
                )
        engine = Engine(loaded_all, stats, receive, nursery.cancel_scope, hooks, nursery, selection)
        try:
            yield engine
        finally:
            nursery.cancel_scope.cancel()
            send.close()


async def _start_pump(
    loaded: LoadedGadget,
    outlet: _Outlet,
    stack: contextlib.AsyncExitStack,
    nursery: trio.Nursery,
) -> None:
    gadget = loaded.gadget
    maps = buffer_maps(libbcc.lib(), loaded.bpf.module)
    if not maps:
        return
    decoders = _decoders(loaded, maps)
    programs = {m.name: map_writers(gadget, m.name) for m in maps}

    def on_batch(name: str, batch: list[bytes]) -> None:
        decode = decoders[name].decode
        program = programs[name]
        outlet.stats.for_map(gadget.name, name).received += len(batch)
        records: list[Record] = [Event(gadget.name, name, program, decode(raw)) for raw in batch]
        outlet.deliver(gadget.name, name, records)

    def on_lost(name: str, count: int) -> None:
        outlet.stats.for_map(gadget.name, name).lost_kernel += count
        outlet.put(Lost(gadget.name, name, count, "kernel"))

    pump = BufferPump(loaded.bpf, maps, on_batch, on_lost)
    stack.callback(pump.close)
    pump.open()
    await nursery.start(pump.run)


def describe(loaded: LoadedGadget) -> dict[str, Any]:
    return {"gadget": loaded.gadget.name, "programs": sorted(loaded.programs)}
