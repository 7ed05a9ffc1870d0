"""When each Docker netns file, host-side veth and tc filter appeared, seen apart from the engine.

The engine's own records say when it saw a netns, and a pre-attached classifier's `attached`
record comes when the filter is handed to the netns's task, not when it was added
(docs/events.md). This watcher reads the host's link and tc messages (RTMGRP_LINK, RTMGRP_TC)
and inotify on Docker's netns folder in a thread of its own and stamps each with the wall clock
as it arrives: when a netns file was made, when the netns was bind-mounted on it (the mount
table's changes, /proc/self/mountinfo's POLLPRI: nothing can be attached before, the file is
empty), when a veth was put on a bridge (when TC pre-attach can begin:
engine/attach/preattach.py), and when filters were added to a host interface.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager

import attrs

from engine.attach.tcmsg import RTM_NEWTFILTER, TCMSG
from engine.netns.inotify import IN_CREATE, Inotify
from engine.netns.links import RTMGRP_LINK, veth_link
from engine.netns.netlink import enlarge_receive_buffer, messages, rtnl_socket
from engine.sources.netns_paths import RUNTIME_NETNS_DIRS

POLL = 0.1  # seconds between looks at the stop flag
RTMGRP_TC = 0x8


@attrs.define
class HostTimes:
    netns_files: dict[str, float] = attrs.Factory(dict)  # path -> made
    netns_mounted: dict[str, float] = attrs.Factory(dict)  # path -> a netns mounted on it
    on_bridge: dict[str, float] = attrs.Factory(dict)  # host-side veth name -> on a bridge
    ifindexes: dict[str, int] = attrs.Factory(dict)  # host-side veth name -> its index
    filters: dict[int, list[float]] = attrs.Factory(dict)  # ifindex -> each filter added

    def filters_added(self, ifname: str, count: int) -> float | None:
        """When the first ``count`` filters were on the host interface ``ifname``."""
        added = self.filters.get(self.ifindexes.get(ifname, 0), [])
        return added[count - 1] if len(added) >= count else None


@contextmanager
def watching() -> Iterator[HostTimes]:
    """The times, filled in while the block runs."""
    times = HostTimes()
    stop = threading.Event()
    with ExitStack() as stack:
        links = stack.enter_context(rtnl_socket(blocking=False, groups=RTMGRP_LINK | RTMGRP_TC))
        enlarge_receive_buffer(links)
        files = stack.enter_context(closing(Inotify()))
        folder = RUNTIME_NETNS_DIRS[0]
        files.watch(folder, IN_CREATE)
        mounts = os.open("/proc/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
        stack.callback(os.close, mounts)
        thread = threading.Thread(target=_read, args=(times, links.fileno(), files, mounts, stop))
        thread.start()
        try:
            yield times
        finally:
            stop.set()
            thread.join()


def _read(times: HostTimes, links: int, files: Inotify, mounts: int, stop: threading.Event) -> None:
    nsfs = os.stat("/proc/self/ns/net").st_dev
    unmounted: set[str] = set()
    while not stop.is_set():
        # A change of the mount table is an "exceptional condition" (POLLPRI) on mountinfo,
        # reported once: the poll itself takes it (no read needed before the next one).
        ready, _, changed = select.select([links, files.fileno()], [], [mounts], POLL)
        now = time.time()
        if files.fileno() in ready:
            for event in files.read_nowait():
                path = os.path.join(event.directory, event.name)
                times.netns_files.setdefault(path, now)
                unmounted.add(path)
        if changed or files.fileno() in ready:
            for path in list(unmounted):
                try:
                    mounted = os.stat(path).st_dev == nsfs
                except OSError:
                    unmounted.discard(path)
                    continue
                if mounted:
                    times.netns_mounted[path] = now
                    unmounted.discard(path)
        if links in ready:
            try:
                data = os.read(links, 1 << 16)
            except OSError:
                continue  # ENOBUFS (messages lost: their veths have no time) or none waiting
            for message in messages(data):
                if message.kind == RTM_NEWTFILTER and len(message.payload) >= TCMSG.size:
                    ifindex = TCMSG.unpack_from(message.payload)[1]
                    times.filters.setdefault(ifindex, []).append(now)
                veth = veth_link(message.kind, message.payload)
                if veth is not None and not veth.deleted and veth.bridge_port:
                    times.on_bridge.setdefault(veth.ifname, now)
                    times.ifindexes.setdefault(veth.ifname, veth.ifindex)
