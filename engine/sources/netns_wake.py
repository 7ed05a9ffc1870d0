"""What makes the netns source look again (engine/sources/netns.py): nsid events waiting,
files made or removed in the netns folders, the mount table changing, a due deadline, or a
request to look at everything (``recheck``). Each feed sends a ``Wake``; the source takes
every wake waiting at once, merged, so that a burst is one look.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import socket

import attrs
import trio

from engine.netns.inotify import (
    IN_CREATE,
    IN_DELETE,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    Inotify,
)
from engine.netns.mounts import MountWatcher
from engine.netns.rtnl import NsidEvent, parse_events

logger = logging.getLogger(__name__)


@attrs.frozen
class Wake:
    """Why the processing loop should look again."""

    nsids: bool = False  # the nsid event socket is readable
    names: bool = False  # a pending name may have its bind mount now
    rescan: bool = False
    gone: frozenset[str] = frozenset()  # files removed
    sweep: bool = False  # look at every known netns (``recheck``)

    def merge(self, other: Wake) -> Wake:
        return Wake(
            self.nsids or other.nsids,
            self.names or other.names,
            self.rescan or other.rescan,
            self.gone | other.gone,
            self.sweep or other.sweep,
        )


@attrs.define
class Feeds:
    """The tasks that watch for change, and what they share with the processing loop."""

    # Files made in the folders whose bind mount may not be there yet.
    pending_names: set[str] = attrs.Factory(set)
    _drained: trio.Event = attrs.Factory(trio.Event)

    def watch_dirs(self, inotify: Inotify, directories: tuple[str, ...]) -> None:
        for directory in directories:
            if os.path.isdir(directory):
                inotify.watch(directory, IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO)

    def read_nsids(self, sock: socket.socket) -> tuple[list[NsidEvent], bool]:
        """Every nsid event waiting, and whether some were lost; the nsid feed may then wait
        again."""
        lost = False
        events: list[NsidEvent] = []
        while True:
            try:
                events += parse_events(sock.recv(65536))
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                logger.warning("nsid events were lost (ENOBUFS): looking at everything again")
                lost = True
        self._drained.set()
        self._drained = trio.Event()
        return events, lost

    async def follow_nsids(self, sock: socket.socket, wake: trio.MemorySendChannel[Wake]) -> None:
        """Say when nsid events wait; the processing loop reads them."""
        async with wake:
            while True:
                await trio.lowlevel.wait_readable(sock)
                drained = self._drained
                await wake.send(Wake(nsids=True))
                await drained.wait()

    async def follow_dirs(self, inotify: Inotify, wake: trio.MemorySendChannel[Wake]) -> None:
        async with wake:
            while True:
                for event in await inotify.read():
                    path = os.path.join(event.directory, event.name)
                    if event.mask & IN_Q_OVERFLOW:
                        await wake.send(Wake(rescan=True, sweep=True))
                    elif event.mask & (IN_CREATE | IN_MOVED_TO):
                        # The file exists before its bind mount: wait for the mount.
                        self.pending_names.add(path)
                        await wake.send(Wake(names=True))
                    elif event.mask & (IN_DELETE | IN_MOVED_FROM):
                        self.pending_names.discard(path)
                        await wake.send(Wake(gone=frozenset([path])))

    async def follow_mounts(self, mounts: MountWatcher, wake: trio.MemorySendChannel[Wake]) -> None:
        async with wake:
            while True:
                await mounts.changed()
                if self.pending_names:
                    await wake.send(Wake(names=True))


async def next_wake(receive: trio.MemoryReceiveChannel[Wake], deadline: float = math.inf) -> Wake:
    """The next reason to look, merged with all those already waiting; an empty one at
    ``deadline``."""
    wake = Wake()
    with trio.move_on_at(deadline):
        wake = await receive.receive()
    while True:
        try:
            wake = wake.merge(receive.receive_nowait())
        except trio.WouldBlock:
            return wake
