"""HookMethods: the hook API of ``Engine`` (decorators, the nursery, maps, the selection)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import trio

from engine.bcc.params import write_params
from engine.gadget.param_values import checked, find_param
from engine.hooks.dispatch import Hooks, HookStats, Selector
from engine.hooks.maps import MapView
from engine.records import ContainerAdded, ContainerRemoved, Event, Record, SelectionChanged
from engine.sources.containers import Container
from engine.world.selection import Selection

if TYPE_CHECKING:
    from engine.bcc.loader import LoadedGadget

H = TypeVar("H", bound=Callable[..., Awaitable[object]])


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

    async def wait_for(self, predicate: Callable[[Record], bool]) -> Record:
        """The first record from now on for which ``predicate`` is true: something to wait on
        (wrap it in ``trio.fail_after``), e.g. ``await eng.wait_for(lambda r: isinstance(r,
        ProgramAttached) and r.container == "web")``.
        It sees every record, also those ``events()`` had no room for."""
        return await self._hooks.wait_for(predicate)

    def every(
        self, seconds: float | None, fn: Callable[[], object], *, at_stop: bool = True
    ) -> None:
        """Call ``fn`` every ``seconds`` (never, with None) and, with ``at_stop``, once more
        when the engine stops, for a final report. ``fn`` may be a coroutine function."""

        async def call() -> None:
            result = fn()
            if inspect.isawaitable(result):
                await result

        async def repeat() -> None:
            try:
                while True:
                    await trio.sleep(math.inf if seconds is None else seconds)
                    await call()
            finally:
                if at_stop:
                    with trio.CancelScope(shield=True):
                        await call()

        self._nursery.start_soon(repeat)

    def _loaded(self, gadget: str) -> LoadedGadget:
        for loaded in self.gadgets:
            if loaded.gadget.name == gadget:
                return loaded
        raise KeyError(f"no gadget {gadget!r} is loaded")

    def map(self, gadget: str, name: str) -> MapView:
        """A map of a loaded gadget by the gadget's name and the map's name in its source."""
        return MapView.of(self._loaded(gadget), name)

    async def set_param(self, gadget: str, name: str, value: int | bool | str) -> None:
        """Give a gadget's parameter a new value (text is parsed as ``--param`` parses it);
        its programs read it from their next run on.

        Raises ``KeyError`` for a gadget that is not loaded, ``ParamError`` for a parameter it
        does not declare or a value its type cannot hold, ``EngineStoppedError`` once the
        gadget is unloaded.
        """
        loaded = self._loaded(gadget)
        expression = f"{gadget}:{name}={value}"
        param = find_param(loaded.gadget, name, expression)
        await write_params(loaded, {name: checked(param, loaded.gadget, value, expression)})

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
