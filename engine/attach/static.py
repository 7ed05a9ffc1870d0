"""Attaching static programs: once when the engine starts, detached when it stops.

The attachers of kprobes/uprobes/USDT (engine.attach.probes) and of trampolines
(engine.attach.tracing) live in their own modules; tracepoints are here, with the table
that maps every static kind to its attacher.

Each attacher is an async context manager that always detaches, also when cancelled. Every
attachment is an fd of the engine's own (not kept in bcc's ``BPF`` object), so two programs
on one target are two attachments, each detached by its own attacher.
"""

from __future__ import annotations

import ctypes as ct
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import trio

from engine.attach.probes import attach_kprobe, attach_uprobe, attach_usdt, target_not_found
from engine.attach.tracing import attach_trampoline
from engine.bcc import libbcc
from engine.bcc.loader import LoadedGadget, LoadedProgram
from engine.bcc.targets import TargetMissing, check_target
from engine.errors import AttachError, TargetNotFoundError
from engine.gadget.sections import Kind


def _check(loaded: LoadedGadget, program: LoadedProgram) -> None:
    try:
        check_target(program.spec)
    except TargetMissing as exc:
        raise target_not_found(loaded, program, exc) from exc


def _fd_or_errno(fd: int) -> int:
    """``fd``, or minus the errno of the failed call (read in the thread that made it)."""
    return fd if fd >= 0 else -(ct.get_errno() or -fd)


def _opened(program: LoadedProgram, what: str, fd: int) -> int:
    if fd < 0:
        err = -fd
        raise AttachError(
            program.spec.function,
            f"{program.spec.section.text}: cannot attach to {what}: {os.strerror(err)}",
            errno=err,
        )
    return fd


@asynccontextmanager
async def attach_tracepoint(loaded: LoadedGadget, program: LoadedProgram) -> AsyncIterator[None]:
    """A tracepoint through a perf event fd of our own: bcc's ``attach_tracepoint`` keeps one
    fd per tracepoint, so a second program on the same tracepoint would lose the first's."""
    _check(loaded, program)
    category, name = program.spec.section.parts
    lib = libbcc.lib()

    def attach() -> int:
        fd = lib.bpf_attach_tracepoint(program.fd, category.encode(), name.encode())
        return _fd_or_errno(int(fd))

    # Not abandoned on cancellation: the fd always comes back and is always closed.
    fd = _opened(program, f"tracepoint {category}:{name}", await trio.to_thread.run_sync(attach))
    try:
        yield
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(lib.bpf_close_perf_event_fd, fd)


@asynccontextmanager
async def attach_raw_tracepoint(
    loaded: LoadedGadget, program: LoadedProgram
) -> AsyncIterator[None]:
    """A raw tracepoint through a link fd of our own (bcc's refuses a second program)."""
    _check(loaded, program)
    (name,) = program.spec.section.parts

    def attach() -> int:
        return _fd_or_errno(int(libbcc.lib().bpf_attach_raw_tracepoint(program.fd, name.encode())))

    fd = await trio.to_thread.run_sync(attach)
    if fd < 0:
        err = -fd
        raise TargetNotFoundError(
            loaded.gadget.path,
            program.spec.line,
            program.spec.function,
            f"cannot attach to raw tracepoint {name!r}: {os.strerror(err)}",
        )
    try:
        yield
    finally:
        os.close(fd)


StaticAttacher = Callable[[LoadedGadget, LoadedProgram], AbstractAsyncContextManager[None]]

STATIC_ATTACHERS: dict[Kind, StaticAttacher] = {
    Kind.TRACEPOINT: attach_tracepoint,
    Kind.RAW_TRACEPOINT: attach_raw_tracepoint,
    Kind.KPROBE: attach_kprobe,
    Kind.KRETPROBE: attach_kprobe,
    Kind.UPROBE: attach_uprobe,
    Kind.URETPROBE: attach_uprobe,
    Kind.USDT: attach_usdt,
    Kind.FENTRY: attach_trampoline,
    Kind.FEXIT: attach_trampoline,
    Kind.LSM: attach_trampoline,
}


def static_attacher(kind: Kind) -> StaticAttacher | None:
    return STATIC_ATTACHERS.get(kind)
