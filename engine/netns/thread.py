"""Run a function inside a netns on a fresh thread that dies afterwards.

setns(CLONE_NEWNET) changes only the calling thread. trio's worker threads are reused, so a
netns entered there would leak into unrelated work; a dedicated thread per call cannot leak:
it enters, runs the function, and exits.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import TypeVar, TypeVarTuple

import outcome
import trio

from engine.netns.handle import CLONE_NEWNET, NetnsHandle

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.setns.restype = ctypes.c_int


def setns_current_thread(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


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
) -> T:
    """Await `fn(*args)` run inside the netns of `handle` on a dedicated, short-lived thread.

    Cancellation does not wait for the thread (a syscall cannot be interrupted): the caller
    returns at once and, when `fn` finishes later, its result is handed to `release` on that
    thread, so that what it made (a socket, an fd) is not leaked.
    """
    fd = handle.dup()
    token = trio.lowlevel.current_trio_token()
    task = trio.lowlevel.current_task()
    lock = threading.Lock()
    # "waiting" until the thread reports or the caller gives up; then "delivered"/"abandoned".
    state = ["waiting"]

    def body() -> None:
        try:
            result = outcome.capture(_enter_and_call, fd, lambda: fn(*args))
        finally:
            os.close(fd)
        with lock:
            if state[0] == "waiting":
                try:
                    token.run_sync_soon(trio.lowlevel.reschedule, task, result)
                    state[0] = "delivered"
                except trio.RunFinishedError:
                    state[0] = "abandoned"
        if state[0] == "abandoned" and release is not None and isinstance(result, outcome.Value):
            release(result.value)

    def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        with lock:
            if state[0] == "delivered":
                # The result is already on its way; the caller will own it.
                return trio.lowlevel.Abort.FAILED
            state[0] = "abandoned"
            return trio.lowlevel.Abort.SUCCEEDED

    try:
        threading.Thread(target=body, name=f"netns {handle.id}", daemon=True).start()
    except BaseException:
        os.close(fd)
        raise
    value: T = await trio.lowlevel.wait_task_rescheduled(abort)
    return value
