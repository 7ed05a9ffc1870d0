"""Threads of the engine's own for blocking work: inside a netns, and rtnetlink in the host.

setns(CLONE_NEWNET) changes only the calling thread, and trio reuses its worker threads, so a
netns entered in one of those would leak into unrelated work. A ``Worker`` is one long-lived
thread that never runs anything but its own calls, one at a time: for a call inside a netns it
enters it, runs the call, and returns to the host netns before it takes the next (a thread
that could not return hands its queue to a new thread and ends). One thread for the whole
churn, instead of a thread started per call, and no place taken in trio's shared thread
limiter, which a flood of attaches used to fill.

``HostRtnl`` is a worker whose threads each own a blocking rtnetlink socket in the host netns,
for requests that wait on the RTNL lock (tc qdiscs and filters).
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import socket
import threading
from collections.abc import Callable
from typing import Any, TypeVar, TypeVarTuple

import attrs
import outcome
import trio

from engine.netns.handle import CLONE_NEWNET, NetnsHandle
from engine.netns.netlink import RtnlSocket
from engine.netns.priority import Priority, raise_this_thread

log = logging.getLogger(__name__)

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.setns.restype = ctypes.c_int


def setns_current_thread(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@attrs.define(eq=False)
class _Call:
    """One call and how its outcome reaches the waiting task (or ``release`` if it left)."""

    thunk: Callable[[], Any]
    netns_fd: int | None
    token: trio.lowlevel.TrioToken
    task: trio.lowlevel.Task
    release: Callable[[Any], object] | None
    lock: threading.Lock = attrs.Factory(threading.Lock)
    # "waiting" until the thread reports or the caller gives up; then "delivered"/"abandoned".
    state: str = "waiting"

    def deliver(self, result: outcome.Outcome[Any]) -> None:
        with self.lock:
            if self.state == "waiting":
                try:
                    self.token.run_sync_soon(trio.lowlevel.reschedule, self.task, result)
                    self.state = "delivered"
                except trio.RunFinishedError:
                    self.state = "abandoned"
        release = self.release if self.state == "abandoned" else None
        if release is not None and isinstance(result, outcome.Value):
            release(result.value)

    def abort(self, _: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        if self.release is None:
            return trio.lowlevel.Abort.FAILED  # waited for: its result must not be lost
        with self.lock:
            if self.state == "delivered":
                return trio.lowlevel.Abort.FAILED  # on its way: the caller owns it
            self.state = "abandoned"
            return trio.lowlevel.Abort.SUCCEEDED


class Worker(trio.abc.AsyncResource):
    """Threads of its own (one unless asked) running blocking calls, inside a netns when asked.

    Made on the trio thread (in the host netns, whose fd each thread keeps to come back to).
    The threads start with the first call and end once ``aclose()`` (idempotent) has been
    called and the calls already asked for are done, each running ``on_exit`` last. Several
    threads take calls from one queue: for calls that mostly wait in the kernel (on the RTNL
    lock), so that one long wait does not hold up the others.
    """

    def __init__(
        self,
        name: str,
        *,
        threads: int = 1,
        on_start: Callable[[], object] | None = None,
        on_exit: Callable[[], object] | None = None,
        callers_priority: bool = False,
    ) -> None:
        self.name = name
        self._on_start = on_start
        # The threads at the priority of the thread that starts them (engine/netns/priority.py):
        # for workers on the attach path, which the trio thread starts.
        self._callers_priority = callers_priority
        self._priority: Priority | None = None
        self._count = threads
        self._on_exit = on_exit
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._closed = False

    async def run(
        self,
        fn: Callable[[*Ts], T],
        *args: *Ts,
        netns: NetnsHandle | None = None,
        release: Callable[[T], object] | None = None,
    ) -> T:
        """``fn(*args)`` on the thread, inside ``netns`` if given, else in the host netns.

        With ``release``, cancellation does not wait for the call (a syscall cannot be
        interrupted): the caller returns at once and the call's result, once made, is handed
        to ``release`` on the thread, so that what it made (a socket, an fd) is not leaked.
        Without it, a cancelled caller waits for the result and is cancelled after.
        """
        if self._closed:
            raise trio.ClosedResourceError(f"worker {self.name} is closed")
        fd = netns.dup() if netns is not None else None
        call = _Call(
            lambda: fn(*args),
            fd,
            trio.lowlevel.current_trio_token(),
            trio.lowlevel.current_task(),
            release,
        )
        try:
            self.start()
            self._calls.put(call)
        except BaseException:
            if fd is not None:
                os.close(fd)
            raise
        value: T = await trio.lowlevel.wait_task_rescheduled(call.abort)
        return value

    def start(self) -> None:
        """The threads, now (else with the first call); on the trio thread. Idempotent."""
        if self._threads or self._closed:
            return
        if self._callers_priority:
            self._priority = Priority.of_this_thread()
        host_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            for _ in range(self._count):
                self._spawn(os.dup(host_fd))
        finally:
            os.close(host_fd)

    def _spawn(self, host_fd: int) -> None:
        thread = threading.Thread(target=self._serve, args=(host_fd,), name=self.name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _serve(self, host_fd: int) -> None:
        # Threads start in their creator's netns: a replacement made by a thread that could
        # not return to the host's must go there first.
        setns_current_thread(host_fd)
        raise_this_thread(self._priority)
        if self._on_start is not None:
            self._on_start()
        while (call := self._calls.get()) is not None:
            try:
                if call.netns_fd is not None:
                    result = outcome.capture(_inside, call.netns_fd, call.thunk)
                else:
                    result = outcome.capture(call.thunk)
            finally:
                if call.netns_fd is not None:
                    os.close(call.netns_fd)
            try:
                setns_current_thread(host_fd)
            except OSError:
                # Still in another netns: this thread must run nothing else; its place (and
                # its host fd) goes to a new one.
                log.exception("worker %s could not return to the host netns", self.name)
                call.deliver(result)
                self._spawn(host_fd)
                return
            call.deliver(result)
        try:
            if self._on_exit is not None:
                self._on_exit()
        finally:
            os.close(host_fd)

    @property
    def started(self) -> bool:
        return bool(self._threads)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Idempotent: no new calls; the threads end after those already asked for."""
        if not self._closed:
            self._closed = True
            for _ in self._threads[: self._count]:
                self._calls.put(None)

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    async def join(self) -> None:
        """Closed, and returned once every thread has ended (shielded: it always waits)."""
        self.close()
        with trio.CancelScope(shield=True):
            while self._threads:
                thread = self._threads[0]
                await trio.to_thread.run_sync(thread.join)
                if not thread.is_alive() and thread in self._threads:
                    self._threads.remove(thread)


def _inside(fd: int, thunk: Callable[[], T]) -> T:
    setns_current_thread(fd)
    return thunk()


class Closer(trio.abc.AsyncResource):
    """Sockets closed off the trio thread, several at once.

    Closing an AF_PACKET socket waits for an RCU grace period (``synchronize_net`` in the
    kernel's packet_release), 10-30 ms here: on the trio thread that stalled everything, and
    one thread alone could not close 100 a second. Closes running on several threads share
    their grace periods. ``aclose()`` (idempotent) returns once every close asked for is done.
    """

    def __init__(self, threads: int = 4) -> None:
        self._count = threads
        self._queue: queue.SimpleQueue[socket.socket | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def close_soon(self, sock: socket.socket) -> None:
        if self._closed:
            sock.close()
            return
        if not self._threads:
            for i in range(self._count):
                thread = threading.Thread(target=self._serve, name=f"closer {i}", daemon=True)
                thread.start()
                self._threads.append(thread)
        self._queue.put(sock)

    def _serve(self) -> None:
        while (sock := self._queue.get()) is not None:
            try:
                sock.close()
            except OSError:
                log.exception("closing %s", sock)

    async def aclose(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(None)
        with trio.CancelScope(shield=True):
            for thread in threads:
                await trio.to_thread.run_sync(thread.join)


class HostRtnl(trio.abc.AsyncResource):
    """rtnetlink requests in the host netns, on threads of their own (see module doc), each
    with its own socket."""

    def __init__(
        self, name: str = "host rtnetlink", *, threads: int = 1, callers_priority: bool = False
    ) -> None:
        self._local = threading.local()  # each thread's socket, made and used there only
        self._worker = Worker(
            name,
            threads=threads,
            on_start=self._open_socket,
            on_exit=self._close_socket,
            callers_priority=callers_priority,
        )

    def start(self) -> None:
        """The threads and their sockets, now (else with the first call). Idempotent."""
        self._worker.start()

    async def call(self, fn: Callable[[RtnlSocket, *Ts], T], *args: *Ts) -> T:
        """``fn(socket, *args)`` on a thread; a cancelled caller waits for it to finish."""
        return await self._worker.run(self._with_socket, fn, args)

    def _open_socket(self) -> None:
        # Each thread's socket as it starts: a started worker holds all it ever will, not
        # one more socket the first time a call lands on a thread not used before. One that
        # cannot be made now is made (or its error raised to the caller) by the first call.
        try:
            self._local.sock = RtnlSocket()
        except OSError:
            log.exception("%s: cannot open a netlink socket yet", self._worker.name)

    def _with_socket(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        sock: RtnlSocket | None = getattr(self._local, "sock", None)
        if sock is None:
            sock = self._local.sock = RtnlSocket()
        return fn(sock, *args)

    def _close_socket(self) -> None:
        sock: RtnlSocket | None = getattr(self._local, "sock", None)
        if sock is not None:
            sock.close()

    async def aclose(self) -> None:
        """Idempotent: returns once the calls asked for are done and the sockets closed."""
        await self._worker.join()
