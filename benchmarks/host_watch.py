"""When each Docker netns file was made and mounted, each host-side veth put on a bridge and
each tc filter added, seen apart from the engine.

The engine's own records say when it saw a netns, and a pre-attached classifier's `attached`
record comes when the filter is handed to the netns's task, not when it was added
(docs/events.md). This watcher reads the host's link and tc messages (RTMGRP_LINK, RTMGRP_TC)
and inotify on Docker's netns folder and stamps each with the wall clock (the monotonic one
with ``--filters-only``) as it arrives: when a
netns file was made, when the netns was bind-mounted on it (the mount table's changes,
/proc/self/mountinfo's POLLPRI: nothing can be attached before, the file is empty), when a
veth was put on a bridge (when TC pre-attach can begin: engine/attach/preattach.py), and when
filters were added to a host interface.

It is a process of its own (``python -m benchmarks.host_watch``, started by ``watching()``),
not a thread of the benchmark's: there it shared the GIL with the engine under test, so it
stamped an event only once the engine's trio thread let it run (in the recorded run of
8e0e392, at 1/s, a netns's mount was stamped after its socket filter's record had arrived),
took the GIL from the engine for every link message it parsed, and its CPU counted as the
engine process's.
"""

from __future__ import annotations

import json
import math
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path
from typing import IO, Any

import attrs

from engine.attach.tcmsg import RTM_NEWTFILTER, TCMSG
from engine.netns.inotify import IN_CREATE, Inotify
from engine.netns.links import RTMGRP_LINK, veth_link
from engine.netns.netlink import Message, enlarge_receive_buffer, messages, rtnl_socket
from engine.sources.netns_paths import RUNTIME_NETNS_DIRS

RTMGRP_TC = 0x8
READY = b"ready\n"
ROOT = Path(__file__).resolve().parent.parent
STOP_WAIT = 10.0  # seconds for the watcher to end once its input is closed


@attrs.define
class HostTimes:
    netns_files: dict[str, float] = attrs.Factory(dict)  # path -> made
    netns_mounted: dict[str, float] = attrs.Factory(dict)  # path -> a netns mounted on it
    on_bridge: dict[str, float] = attrs.Factory(dict)  # host-side veth name -> on a bridge
    ifindexes: dict[str, int] = attrs.Factory(dict)  # host-side veth name -> its index
    filters: dict[int, list[float]] = attrs.Factory(dict)  # ifindex -> each filter added

    def filters_added(self, ifname: str, count: int) -> float | None:
        """When the first ``count`` filters were on the host interface ``ifname``."""
        return self.filters_on(self.ifindexes.get(ifname, 0), count)

    def filters_on(self, ifindex: int, count: int, since: float = -math.inf) -> float | None:
        """When the first ``count`` filters added to ``ifindex`` from ``since`` on were."""
        added = [at for at in self.filters.get(ifindex, []) if at >= since]
        return added[count - 1] if len(added) >= count else None

    def note(self, kind: str, key: str | int, at: float, ifindex: int = 0) -> None:
        """One of the watcher's events (``encode``)."""
        if kind == "file":
            self.netns_files.setdefault(str(key), at)
        elif kind == "mounted":
            self.netns_mounted.setdefault(str(key), at)
        elif kind == "bridge":
            self.on_bridge.setdefault(str(key), at)
            self.ifindexes.setdefault(str(key), ifindex)
        elif kind == "filter":
            self.filters.setdefault(int(key), []).append(at)


def encode(events: Iterable[list[Any]]) -> bytes:
    """The watcher's lines: one JSON list an event, ``[kind, key, time]`` (``bridge`` adds the
    veth's index), as ``HostTimes.note`` takes them."""
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


def take(times: HostTimes, lines: Iterable[bytes]) -> None:
    """The watcher's lines noted in ``times`` as they come, to the end of its output."""
    for line in lines:
        times.note(*json.loads(line))


FILTERS_ONLY = "--filters-only"


@contextmanager
def watching(*, filters_only: bool = False) -> Iterator[HostTimes]:
    """The times, filled in while the block runs (the watcher is ready when it begins).
    ``filters_only``: only the tc filters added (the synthetic churn needs no more), so that
    the watcher wakes for those messages alone, not for every link message, mount change
    and file of the machine's churn: each wake-up of it competes for a CPU with the engine
    under test, at the moments the engine works."""
    times = HostTimes()
    child = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.host_watch", *([FILTERS_ONLY] * filters_only)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert child.stdin is not None and child.stdout is not None
    reader = threading.Thread(target=take, args=(times, child.stdout))
    try:
        if child.stdout.readline() != READY:
            raise RuntimeError(f"the host watcher ended before it was ready ({child.wait()})")
        reader.start()
        yield times
    finally:
        child.stdin.close()  # the watcher ends at the end of its input
        try:
            child.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        if reader.ident is not None:
            reader.join()  # its output read to the end
        child.stdout.close()


def main() -> int:
    """``python -m benchmarks.host_watch [--filters-only]``: ``ready``, then the events
    (``encode``) until its input ends."""
    out: IO[bytes] = sys.stdout.buffer
    filters_only = sys.argv[1:] == [FILTERS_ONLY]
    with ExitStack() as stack:
        groups = RTMGRP_TC if filters_only else RTMGRP_LINK | RTMGRP_TC
        links = stack.enter_context(rtnl_socket(blocking=False, groups=groups))
        enlarge_receive_buffer(links)
        files = stack.enter_context(closing(Inotify()))
        if os.path.isdir(RUNTIME_NETNS_DIRS[0]) and not filters_only:  # Docker's
            files.watch(RUNTIME_NETNS_DIRS[0], IN_CREATE)
        mounts = None
        if not filters_only:
            mounts = os.open("/proc/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
            stack.callback(os.close, mounts)
        out.write(READY)
        out.flush()
        # Filters only (the synthetic churn): on the generator's clock, CLOCK_MONOTONIC, which
        # every process shares; the wall clock can be slewed while a run goes on.
        clock = time.monotonic if filters_only else time.time
        for events in _watch(links.fileno(), files, mounts, stop=sys.stdin.fileno(), clock=clock):
            out.write(encode(events))
            out.flush()
    return 0


def _watch(
    links: int, files: Inotify, mounts: int | None, *, stop: int, clock: Callable[[], float]
) -> Iterator[list[list[Any]]]:
    """Each wake-up's events, until ``stop`` is readable (at its end: the benchmark is done)."""
    nsfs = os.stat("/proc/self/ns/net").st_dev
    unmounted: set[str] = set()
    bridged: set[str] = set()  # veths already reported (a veth's every change is a message)
    while True:
        # A change of the mount table is an "exceptional condition" (POLLPRI) on mountinfo,
        # reported once: the poll itself takes it (no read needed before the next one).
        ready, _, changed = select.select(
            [links, files.fileno(), stop], [], [] if mounts is None else [mounts]
        )
        now = clock()
        if stop in ready:
            return
        events: list[list[Any]] = []
        if files.fileno() in ready:
            for event in files.read_nowait():
                path = os.path.join(event.directory, event.name)
                events.append(["file", path, now])
                unmounted.add(path)
        if changed or files.fileno() in ready:
            for path in list(unmounted):
                try:
                    mounted = os.stat(path).st_dev == nsfs
                except OSError:
                    unmounted.discard(path)
                    continue
                if mounted:
                    events.append(["mounted", path, now])
                    unmounted.discard(path)
        if links in ready:
            events += _link_events(links, clock, bridged)
        yield events


def _link_events(links: int, clock: Callable[[], float], bridged: set[str]) -> list[list[Any]]:
    """Filters added (by ifindex) and veths first seen on a bridge, in every datagram
    waiting, each stamped as it is read (a datagram read later in the loop may have come
    after the wake-up: stamped with the wake-up's time, it would look earlier than it was)."""
    events: list[list[Any]] = []
    for now, message in _waiting(links, clock):
        if message.kind == RTM_NEWTFILTER and len(message.payload) >= TCMSG.size:
            events.append(["filter", TCMSG.unpack_from(message.payload)[1], now])
        veth = veth_link(message.kind, message.payload)
        if veth is None or veth.deleted or not veth.bridge_port or veth.ifname in bridged:
            continue
        bridged.add(veth.ifname)
        events.append(["bridge", veth.ifname, now, veth.ifindex])
    return events


def _waiting(links: int, clock: Callable[[], float]) -> Iterator[tuple[float, Message]]:
    while True:
        try:
            data = os.read(links, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            continue  # ENOBUFS: messages were lost (their veths have no time)
        now = clock()
        for message in messages(data):
            yield now, message


if __name__ == "__main__":
    sys.exit(main())
