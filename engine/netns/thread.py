"""Run a function inside a netns: on a thread that serves only that call, or briefly on the
calling thread.

``run_in_netns``/``in_netns`` are for occasional calls (tools, tests, start-up); the engine's
per-netns work that blocks goes through long-lived workers instead (engine/netns/worker.py),
which never leak a netns either. ``call_inside`` is for a few calls that never block (a socket
made and a program attached to it): on the trio thread itself, the hop to a worker and back
(two thread wake-ups, each a scheduling latency on a saturated node) is the larger cost.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TypeVar, TypeVarTuple

import outcome

from engine.netns.handle import NetnsHandle
from engine.netns.worker import Worker, setns_current_thread

log = logging.getLogger(__name__)

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class NetnsNotRestoredError(RuntimeError):
    """The calling thread could not go back to its own netns after ``call_inside``.

    Not an attach failure but a broken thread: whatever it ran next (sockets, netlink) would
    be made in a container's netns. Never caught by the engine: the run ends with it.
    """


def call_inside(handle: NetnsHandle, fn: Callable[[*Ts], T], *args: *Ts) -> T:
    """``fn(*args)`` on the calling thread, inside the netns of ``handle``; for calls that never
    block (the thread is not free for anything else meanwhile).

    The thread is back in the netns it was in when this returns or raises, whatever ``fn`` or
    the entry did; if it cannot return, NetnsNotRestoredError (see there).
    """
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns_current_thread(handle.fd)  # on failure, still at home: nothing to undo
        try:
            return fn(*args)
        finally:
            _return_home(home)
    finally:
        os.close(home)


def _return_home(home: int) -> None:
    try:
        setns_current_thread(home)
    except OSError as exc:
        log.critical("this thread is stuck in another netns: the engine must stop")
        raise NetnsNotRestoredError(f"cannot return to this thread's netns: {exc}") from exc


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
