"""Run a function inside a netns on a thread that serves only that call.

For occasional calls (tools, tests, start-up). The engine's per-netns work goes through
long-lived workers instead (engine/netns/worker.py), which never leak a netns either.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TypeVar, TypeVarTuple

import outcome

from engine.netns.handle import NetnsHandle
from engine.netns.worker import Worker, setns_current_thread

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


def run_in_netns(handle: NetnsHandle, fn: Callable[[*Ts], T], *args: *Ts) -> T:
    """Blocking: run `fn(*args)` in the netns of `handle` on a new thread and return its result."""
    fd = handle.dup()
    box: list[outcome.Outcome[T]] = []

    def body() -> None:
        try:
            box.append(outcome.capture(_enter_and_call, fd, lambda: fn(*args)))
        finally:
            os.close(fd)

    thread = threading.Thread(target=body, name=f"netns {handle.id}", daemon=True)
    try:
        thread.start()
    except BaseException:
        os.close(fd)
        raise
    thread.join()
    return box[0].unwrap()


def _enter_and_call(fd: int, thunk: Callable[[], T]) -> T:
    setns_current_thread(fd)
    return thunk()


async def in_netns(
    handle: NetnsHandle,
    fn: Callable[[*Ts], T],
    *args: *Ts,
    release: Callable[[T], object] | None = None,
    worker: Worker | None = None,
) -> T:
    """Await `fn(*args)` run inside the netns of `handle`, on ``worker`` or else on a thread
    of its own that ends after the call.

    Cancellation does not wait for the thread (a syscall cannot be interrupted): the caller
    returns at once and, when `fn` finishes later, its result is handed to `release` on that
    thread, so that what it made (a socket, an fd) is not leaked.
    """
    if worker is not None:
        return await worker.run(fn, *args, netns=handle, release=release or _keep)
    own = Worker(f"netns {handle.id}")
    try:
        return await own.run(fn, *args, netns=handle, release=release or _keep)
    finally:
        own.close()


def _keep(_value: object) -> None:
    """What a cancelled call made that needs no release (bytes, a tuple)."""
