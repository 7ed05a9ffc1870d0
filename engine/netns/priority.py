"""A higher scheduling priority for the threads on a new netns's attach path.

Under churn on a saturated node (Docker's daemons, the kernel's netns teardown and the
workloads taking every CPU), each step of an attach that waits for a thread to be woken costs
one scheduling latency: tens of milliseconds at p99 at nice 0 (benchmarks/README.md). The trio
thread (the netns source, the link table, the netns tasks, the socket filters) and the tc
attach workers use little CPU but lie on every new container's first-packet path, so they run
at ``ATTACH_NICE`` (the engine's ``attach_nice``; the workers take the trio thread's, see
``Worker``'s ``callers_priority``). It is a weight, not real-time: a busy trio
thread (an event flood) takes a larger share of one CPU, never a CPU away for good.

Off by default (``open_engine(attach_nice=None)``): the trio thread is also the one that reads
the buffers and runs hooks, so a traced workload yields its CPU to the engine's event reading
too. Measured in the throughput benchmark (4 runs each at 346 k records/s): at nice -10 the
engine lost 6-30 k records a run that it does not lose at nice 0 (the paced generator, pushed
off its CPU, caught up in bursts faster than any reader); at 100 netns/s the churn tail was
lower in 4 of 7 interleaved pairs (benchmarks/README.md). Worth it on a node whose pods come
and go faster than it traces events, not as a default.

Real time instead (``open_engine(attach_realtime=ATTACH_REALTIME)``, ``engine run
--attach-priority realtime``): the same threads SCHED_FIFO at priority 1, so that no ordinary
thread of the node delays them once woken; a nice value only weighs their share. An off-CPU
trace of the trio thread at 100 netns/s (nice 0) found it preempted 3.1 s and running 3.8 s
in 22 s; real-time, the socket attach tail went from 67-111 ms to 14-16 ms (benchmarks/
README.md). It costs more than a nice value: while the trio thread has work (an event flood,
a hook that computes) it keeps its CPU from every ordinary thread, up to the kernel's
real-time limit (sched_rt_runtime_us, 95 % of each CPU by default). Off by default too.

Per thread, with SCHED_RESET_ON_FORK: threads these start (trio's thread cache, the engine's
other workers, bcc's) begin at SCHED_OTHER and nice 0, not at the raised value. Either needs
CAP_SYS_NICE; without it the threads stay as they are and one warning says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator

import attrs

log = logging.getLogger(__name__)

ATTACH_NICE = -10  # what open_engine(attach_nice=ATTACH_NICE) asks for
# What open_engine(attach_realtime=ATTACH_REALTIME) asks for: SCHED_FIFO's lowest priority,
# above every ordinary thread and below every kernel and system real-time one.
ATTACH_REALTIME = 1


_Before = tuple[int, os.sched_param, int]  # policy (with its flags), its parameter, nice


@attrs.frozen
class Priority:
    """What the attach path asks for: a nice value, or real time (SCHED_FIFO at
    ``realtime``); both None: as the thread is."""

    nice: int | None = None
    realtime: int | None = None

    @classmethod
    def of_this_thread(cls) -> Priority:
        """The calling thread's own, for the workers it starts (``Worker``)."""
        tid = threading.get_native_id()
        if os.sched_getscheduler(tid) & ~os.SCHED_RESET_ON_FORK == os.SCHED_FIFO:
            return cls(realtime=os.sched_getparam(tid).sched_priority)
        return cls(nice=os.getpriority(os.PRIO_PROCESS, tid))


def raise_this_thread(wanted: Priority | None, *, warn: bool = False) -> _Before | None:
    """The calling thread at ``wanted`` (None: unchanged); how it was, or None if nothing
    changed (a thread someone made real-time already is left alone). ``warn``: say so when
    the priority cannot be raised (once per engine: its trio thread; the workers are silent)."""
    tid = threading.get_native_id()
    if wanted is None or (wanted.realtime is None and wanted.nice is None):
        return None
    if wanted.realtime is None and wanted.nice == os.getpriority(os.PRIO_PROCESS, tid):
        return None
    policy = os.sched_getscheduler(tid)
    if policy & ~os.SCHED_RESET_ON_FORK != os.SCHED_OTHER:
        return None
    before = (policy, os.sched_getparam(tid), os.getpriority(os.PRIO_PROCESS, tid))
    # Threads started from here on begin at SCHED_OTHER and nice 0 (SCHED_RESET_ON_FORK).
    try:
        if wanted.realtime is not None:
            os.sched_setscheduler(
                tid, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(wanted.realtime)
            )
            return before
        os.setpriority(os.PRIO_PROCESS, tid, wanted.nice or 0)
    except PermissionError as exc:  # nothing changed
        if warn:
            log.warning(
                "the attach path stays at its default priority (needs CAP_SYS_NICE): %s", exc
            )
        return None
    # Setting the flag is always allowed.
    os.sched_setscheduler(tid, os.SCHED_OTHER | os.SCHED_RESET_ON_FORK, os.sched_param(0))
    return before


def _restore(tid: int, before: _Before) -> None:
    policy, param, nice = before
    os.setpriority(os.PRIO_PROCESS, tid, nice)  # a higher nice value is always allowed
    # Clearing SCHED_RESET_ON_FORK needs CAP_SYS_NICE (a thread raised through RLIMIT_NICE
    # alone): left set, it only starts this thread's children at nice 0.
    with contextlib.suppress(PermissionError):
        os.sched_setscheduler(tid, policy, param)


@contextlib.contextmanager
def raised(wanted: Priority | None) -> Iterator[None]:
    """The calling thread at ``wanted`` for the block, then as it was (the trio thread of an
    application that embeds the engine is its own again once the engine has stopped)."""
    before = raise_this_thread(wanted, warn=True)
    try:
        yield
    finally:
        if before is not None:
            _restore(threading.get_native_id(), before)
