"""Attaching static programs: once when the engine starts, detached when it stops.

The attachers of kprobes/uprobes/USDT (engine.attach.probes) and of trampolines
(engine.attach.tracing) live in their own modules; tracepoints are here, with the table
that maps every static kind to its attacher.

Each attacher is an async context manager that always detaches, also when cancelled. bcc's
``BPF`` object is not thread-safe, so calls on it run in a worker thread under the gadget's
lock (``LoadedGadget.call``); detaching runs shielded from cancellation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import trio

from engine.attach.probes import attach_kprobe, attach_uprobe, attach_usdt, target_not_found
from engine.attach.tracing import attach_trampoline
from engine.bcc.loader import LoadedGadget, LoadedProgram
from engine.bcc.targets import TargetMissing, check_target
from engine.errors import AttachError, TargetNotFoundError
from engine.gadget.sections import Kind


async def _detach(loaded: LoadedGadget, fn: Callable[..., Any], **kw: Any) -> None:
    with trio.CancelScope(shield=True):
        await loaded.call(fn, **kw)


def _attach_failed(program: LoadedProgram, exc: Exception) -> AttachError:
    return AttachError(program.spec.function, f"{program.spec.section.text}: {exc}")


def _check(loaded: LoadedGadget, program: LoadedProgram) -> None:
    try:
        check_target(program.spec)
    except TargetMissing as exc:
        raise target_not_found(loaded, program, exc) from exc


@asynccontextmanager
async def attach_tracepoint(loaded: LoadedGadget, program: LoadedProgram) -> AsyncIterator[None]:
    _check(loaded, program)
    category, name = program.spec.section.parts
    tp = f"{category}:{name}"
    try:
        await loaded.call(loaded.bpf.attach_tracepoint, tp=tp, fn_name=program.spec.function)
    except Exception as exc:  # bcc raises bare Exception
        raise _attach_failed(program, exc) from exc
    try:
        yield
    finally:
        await _detach(loaded, loaded.bpf.detach_tracepoint, tp=tp)


@asynccontextmanager
async def attach_raw_tracepoint(
    loaded: LoadedGadget, program: LoadedProgram
) -> AsyncIterator[None]:
    _check(loaded, program)
    (name,) = program.spec.section.parts
    try:
        await loaded.call(loaded.bpf.attach_raw_tracepoint, tp=name, fn_name=program.spec.function)
    except Exception as exc:
        raise TargetNotFoundError(
            loaded.gadget.path,
            program.spec.line,
            program.spec.function,
            f"cannot attach to raw tracepoint {name!r}: {exc}",
        ) from exc
    try:
        yield
    finally:
        await _detach(loaded, loaded.bpf.detach_raw_tracepoint, tp=name)


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
