"""kprobe, kretprobe, uprobe, uretprobe and USDT programs: perf-event probes through libbcc.

libbcc's ``bpf_attach_kprobe``/``bpf_attach_uprobe`` open a perf event on the kernel's kprobe
or uprobe PMU (falling back to a tracefs probe event on kernels without one) and attach the
program to it; closing the event's fd removes the probe. USDT probes are uprobes at each of
the probe's locations, opened with the semaphore's file offset so that the kernel itself
counts the semaphore up in every process mapping the file, running now or started later.

Each attacher is an async context manager that always detaches, shielded from cancellation.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import trio

from engine.bcc import libbcc
from engine.bcc.loader import LoadedGadget, LoadedProgram
from engine.bcc.targets import TargetMissing, check_target, find_uprobe, find_usdt
from engine.errors import AttachError, TargetNotFoundError
from engine.gadget.sections import Kind

T = TypeVar("T")

TRACEFS = Path("/sys/kernel/tracing")
_ENTRY, _RETURN = 0, 1


def target_not_found(
    loaded: LoadedGadget, program: LoadedProgram, exc: TargetMissing
) -> TargetNotFoundError:
    spec = program.spec
    return TargetNotFoundError(loaded.gadget.path, spec.line, spec.function, str(exc))


def _event_name(program: LoadedProgram, index: int = 0) -> str:
    # Only used when libbcc falls back to tracefs probe events: unique per process and program.
    return f"engine_{os.getpid()}_{program.spec.function}_{index}"


def _checked(fd: int, program: LoadedProgram, what: str) -> int:
    if fd < 0:
        err = ct.get_errno() or -fd
        raise AttachError(
            program.spec.function,
            f"{program.spec.section.text}: cannot attach the {what}: {os.strerror(err)}",
            errno=err,
        )
    return fd


def _close_probe(fd: int, event: str, user: bool) -> None:
    lib = libbcc.lib()
    lib.bpf_close_perf_event_fd(fd)
    # A tracefs probe event exists only when libbcc fell back to one (no perf PMU); removing
    # an event that does not exist makes libbcc print errors, so look first.
    try:
        listed = (TRACEFS / ("uprobe_events" if user else "kprobe_events")).read_text()
    except OSError:
        return
    if re.search(rf"/{re.escape(event)}\s", listed):
        (lib.bpf_detach_uprobe if user else lib.bpf_detach_kprobe)(event.encode())


@contextlib.asynccontextmanager
async def _perf_probe(
    attach: Callable[[], int], program: LoadedProgram, what: str, event: str, *, user: bool
) -> AsyncIterator[None]:
    # Not abandoned on cancellation: the fd always comes back and is always closed.
    fd = _checked(await trio.to_thread.run_sync(attach), program, what)
    try:
        yield
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_close_probe, fd, event, user)


def _found(loaded: LoadedGadget, program: LoadedProgram, find: Callable[[], T]) -> T:
    """What ``find`` finds for the program's section, or TargetNotFoundError with file:line."""
    try:
        return find()
    except TargetMissing as exc:
        raise target_not_found(loaded, program, exc) from exc


def _uprobe(
    program: LoadedProgram, mode: int, event: str, path: bytes, offset: int, *, semaphore: int = 0
) -> Callable[[], int]:
    """libbcc's uprobe attach for one location; ``semaphore`` is the USDT semaphore's offset."""

    def attach() -> int:
        fn = libbcc.uprobe_attach()
        return int(fn(program.fd, mode, event.encode(), path, offset, -1, semaphore))

    return attach


@contextlib.asynccontextmanager
async def attach_kprobe(loaded: LoadedGadget, program: LoadedProgram) -> AsyncIterator[None]:
    """A kprobe or kretprobe on a kernel function (checked in /proc/kallsyms first)."""
    _found(loaded, program, lambda: check_target(program.spec))
    (function,) = program.spec.section.parts
    mode = _RETURN if program.spec.kind is Kind.KRETPROBE else _ENTRY
    event = _event_name(program)

    def attach() -> int:
        fn = libbcc.lib().bpf_attach_kprobe
        return int(fn(program.fd, mode, event.encode(), function.encode(), 0, 0))

    async with _perf_probe(attach, program, program.spec.kind.value, event, user=False):
        yield


@contextlib.asynccontextmanager
async def attach_uprobe(loaded: LoadedGadget, program: LoadedProgram) -> AsyncIterator[None]:
    """A uprobe or uretprobe on a function symbol of an executable or library."""
    target = _found(loaded, program, lambda: find_uprobe(*program.spec.section.parts))
    mode = _RETURN if program.spec.kind is Kind.URETPROBE else _ENTRY
    event = _event_name(program)
    attach = _uprobe(program, mode, event, bytes(target.path), target.offset)
    async with _perf_probe(attach, program, program.spec.kind.value, event, user=True):
        yield


@contextlib.asynccontextmanager
async def attach_usdt(loaded: LoadedGadget, program: LoadedProgram) -> AsyncIterator[None]:
    """A USDT probe: a uprobe at each of its locations, with its semaphore counted up."""
    target = _found(loaded, program, lambda: find_usdt(*program.spec.section.parts))
    async with contextlib.AsyncExitStack() as stack:
        for index, location in enumerate(target.locations):
            event = _event_name(program, index)
            attach = _uprobe(
                program,
                _ENTRY,
                event,
                bytes(target.path),
                location.offset,
                semaphore=target.semaphore_offset,
            )
            await stack.enter_async_context(
                _perf_probe(attach, program, "USDT probe", event, user=True)
            )
        yield
