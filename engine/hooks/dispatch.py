"""The scripting API: async hooks that run inside the engine.

Every hook registration gets its own task in the engine's nursery and its own bounded channel.
The engine hands records to hooks with ``send_nowait``: a slow hook never stalls the kernel
readers, the attach work or the other hooks. What a full channel refuses is counted and later
reported as a ``lost`` record with ``where="hook:<name>"``.

A hook that raises gives a ``hook_failed`` record and keeps running for the next record; with
``open_engine(..., strict=True)`` the first failure stops the engine with ``HookError``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import attrs
import trio

from engine.bcc import libbcc
from engine.errors import EngineError
from engine.records import Event, Lost, Record
from engine.sources.containers import Container, ContainerAdded, ContainerRemoved
from engine.world.selection import Selection

if TYPE_CHECKING:
    from engine.bcc.loader import LoadedGadget

log = logging.getLogger(__name__)

DEFAULT_HOOK_BUFFER = 256

EventHook = Callable[[Event], Awaitable[object]]
ContainerHook = Callable[[Container], Awaitable[object]]
H = TypeVar("H", bound=Callable[..., Awaitable[object]])
# Picks what a hook receives from a record, or None when the record is not for this hook.
Selector = Callable[[Record], Any]


class HookError(EngineError):
    """A hook raised while the engine runs in strict mode; the hook's error is the cause."""

    def __init__(self, hook: str, error: BaseException) -> None:
        super().__init__(f"hook {hook!r} failed: {type(error).__name__}: {error}")
        self.hook = hook
        self.error = error


@attrs.frozen
class HookFailed:
    """A hook raised while handling a record; the engine kept running."""

    kind: ClassVar[str] = "hook_failed"
    hook: str
    error_type: str
    message: str
    record_type: str

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "hook": self.hook,
            "error_type": self.error_type,
            "message": self.message,
            "record_type": self.record_type,
        }


@attrs.frozen
class SelectionChanged:
    """The engine's container selection was replaced at run time (``Engine.set_selection``)."""

    kind: ClassVar[str] = "selection_changed"
    select: tuple[str, ...]
    exclude: tuple[str, ...]
    host: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "select": list(self.select),
            "exclude": list(self.exclude),
            "host": self.host,
        }


@attrs.define
class HookStats:
    """Counts for one hook registration."""

    handled: int = 0
    dropped: int = 0
    failed: int = 0


def _record_type(record: Record) -> str:
    return str(record.to_json().get("type", type(record).__name__))


@attrs.define
class _Registration:
    name: str
    fn: Callable[[Any], Awaitable[object]]
    select: Selector
    send: trio.MemorySendChannel[tuple[Any, Record]]
    receive: trio.MemoryReceiveChannel[tuple[Any, Record]]
    stats: HookStats = attrs.Factory(HookStats)
    pending_lost: dict[tuple[str, str], int] = attrs.Factory(dict)


def _lost_key(record: Record) -> tuple[str, str]:
    """Where a dropped record came from: (gadget, map) for events, ("", type) for the rest."""
    if isinstance(record, Event):
        return record.gadget, record.source
    return "", _record_type(record)


@attrs.define
class Hooks:
    """The hook registrations of one engine, and the dispatch of records to them.

    ``emit`` puts the engine's own records (``hook_failed``, ``lost``) on its record stream.
    """

    emit: Callable[[Record], object]
    strict: bool = False
    buffer: int = DEFAULT_HOOK_BUFFER
    _nursery: trio.Nursery | None = None
    _registrations: list[_Registration] = attrs.Factory(list)
    _containers: dict[str, Container] = attrs.Factory(dict)

    def bind(self, nursery: trio.Nursery) -> None:
        """Hooks run in ``nursery`` (the engine's) from now on."""
        self._nursery = nursery

    @property
    def stats(self) -> dict[str, HookStats]:
        return {r.name: r.stats for r in self._registrations}

    def register(self, name: str, fn: Callable[[Any], Awaitable[object]], select: Selector) -> None:
        if self._nursery is None:
            raise RuntimeError("hooks can only be registered on a running engine")
        taken = {r.name for r in self._registrations}
        base, n = name, 1
        while name in taken:  # two hooks named alike still get distinct records
            n += 1
            name = f"{base}#{n}"
        send, receive = trio.open_memory_channel[tuple[Any, Record]](self.buffer)
        registration = _Registration(name, fn, select, send, receive)
        self._registrations.append(registration)
        # Containers already running are news to a hook registered after they were seen.
        for container in list(self._containers.values()):
            self._offer(registration, ContainerAdded(container))
        self._nursery.start_soon(self._run, registration, name=f"hook:{name}")

    def dispatch(self, record: Record) -> None:
        """Offer ``record`` to every hook that wants it; never blocks."""
        if isinstance(record, ContainerAdded):
            self._containers[record.container.id] = record.container
        elif isinstance(record, ContainerRemoved):
            self._containers.pop(record.container.id, None)
        for registration in self._registrations:
            self._offer(registration, record)

    def _offer(self, registration: _Registration, record: Record) -> None:
        argument = registration.select(record)
        if argument is None:
            return
        try:
            registration.send.send_nowait((argument, record))
        except trio.WouldBlock:
            registration.stats.dropped += 1
            key = _lost_key(record)
            registration.pending_lost[key] = registration.pending_lost.get(key, 0) + 1
            return
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return
        self._report_lost(registration)

    def _report_lost(self, registration: _Registration) -> None:
        for (gadget, source), count in registration.pending_lost.items():
            self.emit(Lost(gadget, source, count, f"hook:{registration.name}"))
        registration.pending_lost.clear()

    async def _run(self, registration: _Registration) -> None:
        async with registration.receive:
            async for argument, record in registration.receive:
                await self._call(registration, argument, record)
                if registration.receive.statistics().current_buffer_used == 0:
                    self._report_lost(registration)

    async def _call(self, registration: _Registration, argument: object, record: Record) -> None:
        try:
            await registration.fn(argument)
        except Exception as exc:  # trio.Cancelled is a BaseException: it passes through
            registration.stats.failed += 1
            if self.strict:
                raise HookError(registration.name, exc) from exc
            log.warning("hook %s failed: %s: %s", registration.name, type(exc).__name__, exc)
            self.emit(
                HookFailed(registration.name, type(exc).__name__, str(exc), _record_type(record))
            )
        else:
            registration.stats.handled += 1


def _hook_name(fn: Callable[..., object], name: str | None) -> str:
    return name if name is not None else getattr(fn, "__name__", repr(fn))


def _events_from(source: str | None, gadget: str | None) -> Selector:
    def select(record: Record) -> Event | None:
        if not isinstance(record, Event):
            return None
        if source is not None and record.source != source:
            return None
        if gadget is not None and record.gadget != gadget:
            return None
        return record

    return select


def _added(record: Record) -> Container | None:
    return record.container if isinstance(record, ContainerAdded) else None


def _removed(record: Record) -> Container | None:
    return record.container if isinstance(record, ContainerRemoved) else None


@attrs.frozen
class MapView:
    """One map of a loaded gadget; every call runs in a worker thread under the gadget's lock.

    ``table`` is bcc's table object, for anything not wrapped here: use it only through
    ``call``, since bcc's objects are not thread-safe.
    """

    loaded: LoadedGadget
    name: str

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(table, *args)`` in a worker thread under the gadget's lock."""
        bpf, name = self.loaded.bpf, self.name
        return await self.loaded.call(lambda: fn(bpf.get_table(name), *args))

    async def items(self) -> list[tuple[Any, Any]]:
        """A snapshot of (key, value) pairs as bcc's ctypes values."""
        return list(await self.call(lambda table: list(table.items())))

    async def get(self, key: Any) -> Any:
        """The value for ``key``, or None when the map has no such key."""

        def lookup(table: Any) -> Any:
            try:
                return table[table.Key(key) if isinstance(key, int) else key]
            except KeyError:
                return None

        return await self.call(lookup)

    async def clear(self) -> None:
        await self.call(lambda table: table.clear())


class HookMethods:
    """The hook API of ``Engine``: decorators, the nursery, maps and the selection."""

    gadgets: list[LoadedGadget]
    _hooks: Hooks
    _nursery: trio.Nursery
    selection: Selection
    _selection_watchers: list[Callable[[Selection], None]]

    def on_event(
        self, source: str | None = None, *, gadget: str | None = None, name: str | None = None
    ) -> Callable[[H], H]:
        """Decorate ``async def hook(event: Event)``: called for every gadget event.

        ``source`` keeps only events from the ring/perf buffer map of that name, ``gadget``
        only those of one gadget; ``name`` names the hook in records (default: the function's
        name, with ``#2``, ``#3``... for a name already taken).
        """

        def register(fn: H) -> H:
            self._hooks.register(_hook_name(fn, name), fn, _events_from(source, gadget))
            return fn

        return register

    def on_container_added(self, fn: H) -> H:
        """Decorate ``async def hook(container: Container)``: called for each container that
        runs, including those already running when the hook is registered."""
        self._hooks.register(_hook_name(fn, None), fn, _added)
        return fn

    def on_container_removed(self, fn: H) -> H:
        """Decorate ``async def hook(container: Container)``: called when a container stops."""
        self._hooks.register(_hook_name(fn, None), fn, _removed)
        return fn

    @property
    def hook_stats(self) -> dict[str, HookStats]:
        """Per hook: records handled, dropped (the hook fell behind) and failed."""
        return self._hooks.stats

    @property
    def nursery(self) -> trio.Nursery:
        """The engine's nursery: tasks started here stop when the engine stops."""
        return self._nursery

    def start_soon(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Start a task in the engine's nursery (an error in it stops the engine)."""
        self._nursery.start_soon(fn, *args)

    def map(self, gadget: str, name: str) -> MapView:
        """A map of a loaded gadget by the gadget's name and the map's name in its source."""
        for loaded in self.gadgets:
            if loaded.gadget.name == gadget:
                if not _has_table(loaded, name):
                    raise KeyError(f"gadget {gadget!r} has no map {name!r}")
                return MapView(loaded, name)
        raise KeyError(f"no gadget {gadget!r} is loaded")

    def set_selection(
        self, select: Sequence[str] = (), exclude: Sequence[str] = (), *, host: bool = False
    ) -> Selection:
        """Replace which containers (and whether the host) the engine traces.

        Raises ``SelectionError`` for a bad expression (the old selection stays). Emits a
        ``selection_changed`` record; attachments follow the new selection.
        """
        selection = Selection.parse(select, exclude, host)
        self.selection = selection
        self._hooks.emit(SelectionChanged(tuple(select), tuple(exclude), host))
        for watch in self._selection_watchers:
            watch(selection)
        return selection


def _has_table(loaded: LoadedGadget, name: str) -> bool:
    lib = libbcc.lib()
    module = loaded.bpf.module
    return any(
        lib.bpf_table_name(module, i).decode() == name for i in range(lib.bpf_num_tables(module))
    )
