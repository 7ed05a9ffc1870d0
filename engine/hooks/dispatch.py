"""The dispatch of records to hooks: async functions that run inside the engine.

Every hook registration gets its own task in the engine's nursery and its own bounded channel.
The engine hands records to hooks with ``send_nowait``: a slow hook never stalls the kernel
readers, the attach work or the other hooks. What a full channel refuses is counted and later
reported as a ``lost`` record with ``where="hook:<name>"``.

A hook that raises gives a ``hook_failed`` record and keeps running for the next record; with
``open_engine(..., strict=True)`` the first failure stops the engine with ``HookError``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
import trio

from engine.errors import HookError
from engine.records import ContainerAdded, ContainerRemoved, Event, HookFailed, Lost, Record
from engine.sources.containers import Container

log = logging.getLogger(__name__)

DEFAULT_HOOK_BUFFER = 256

# Picks what a hook receives from a record, or None when the record is not for this hook.
Selector = Callable[[Record], Any]


@attrs.define
class HookStats:
    """Counts for one hook registration."""

    handled: int = 0
    dropped: int = 0
    failed: int = 0


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
    return "", record.TYPE


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
    # ``wait_for`` callers: each predicate with the one-slot channel its match goes to.
    _waiters: list[tuple[Callable[[Record], bool], trio.MemorySendChannel[Record]]] = attrs.Factory(
        list
    )

    async def wait_for(self, predicate: Callable[[Record], bool]) -> Record:
        """The first record from now on for which ``predicate`` is true."""
        send, receive = trio.open_memory_channel[Record](1)
        waiter = (predicate, send)
        self._waiters.append(waiter)
        try:
            async with receive:
                return await receive.receive()
        finally:
            self._waiters.remove(waiter)

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
            self._containers[record.container.key] = record.container
        elif isinstance(record, ContainerRemoved):
            self._containers.pop(record.container.key, None)
        for registration in self._registrations:
            self._offer(registration, record)
        for predicate, send in self._waiters:
            if predicate(record):
                with contextlib.suppress(trio.WouldBlock):  # matched before: the first counts
                    send.send_nowait(record)

    def listening(self) -> bool:
        """Whether a hook or a waiter would see a record now."""
        return bool(self._registrations or self._waiters)

    def dispatch_many(self, records: Sequence[Record]) -> None:
        """``dispatch`` each of a batch of buffer events; nothing to do without hooks."""
        if self.listening():
            for record in records:
                self.dispatch(record)

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
            self.emit(HookFailed(registration.name, type(exc).__name__, str(exc), record.TYPE))
        else:
            registration.stats.handled += 1
