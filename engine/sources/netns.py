"""NetnsSource: the network namespaces of this machine, as they come and go.

Events, not polling:
- rtnetlink RTNLGRP_NSID: RTM_NEWNSID when a netns gets an id in ours (a veth end moved into it:
  every container with a network), RTM_DELNSID when a netns that has an id is destroyed;
- inotify on /run/netns (and the runtimes' netns folders) for files created and removed, plus
  mount-table changes for the bind mount that `ip netns add` puts on such a file.

An nsid event carries only the id. It is mapped to a netns by scanning the places a netns can be
reached from (the folders above, then /proc/*/ns/net) and asking the kernel for the id of each
netns not known yet (RTM_GETNSID with NETNSA_FD). Every netns found is given an id when it has none
(`assign_ids`), so that its destruction always arrives as RTM_DELNSID: that is the one reliable
"gone" signal, since a bind mount can be removed while processes still use the netns.

The source never keeps a netns open (that would keep it alive): consumers open a NetnsHandle from
the record's path when they need one.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import time
from collections.abc import Iterator, Sequence

import attrs
import trio

from engine.netns.handle import NetnsId, host_netns_id, is_netns_fd
from engine.netns.inotify import (
    IN_CREATE,
    IN_DELETE,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    Inotify,
)
from engine.netns.mounts import MountWatcher
from engine.netns.rtnl import NETNSA_NSID_NOT_ASSIGNED, NsidClient, open_event_socket, parse_events
from engine.records import NetnsAdded, NetnsEvent, NetnsRemoved

logger = logging.getLogger(__name__)

NAMED_NETNS_DIR = "/run/netns"
RUNTIME_NETNS_DIRS = ("/run/docker/netns",)


@attrs.frozen
class _Wake:
    """Why the processing loop should look again."""

    nsid_added: int | None = None
    nsid_removed: int | None = None
    rescan: bool = False
    path_gone: bool = False


@attrs.define
class NetnsSource:
    named_dir: str = NAMED_NETNS_DIR
    runtime_dirs: tuple[str, ...] = RUNTIME_NETNS_DIRS
    scan_processes: bool = True
    assign_ids: bool = True
    _known: dict[NetnsId, int] = attrs.field(factory=dict, init=False)
    _by_nsid: dict[int, NetnsId] = attrs.field(factory=dict, init=False)
    _pending_names: set[str] = attrs.field(factory=set, init=False)
    _host: NetnsId = attrs.field(factory=host_netns_id, init=False)
    _requests: trio.MemorySendChannel[_Wake] | None = attrs.field(default=None, init=False)

    async def run(
        self,
        send_channel: trio.MemorySendChannel[NetnsEvent],
        *,
        task_status: trio.TaskStatus[list[NetnsAdded]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Hand back the netns that exist now (``task_status.started(snapshot)``), then send
        each change until cancelled.

        The snapshot is not sent: a channel that nobody reads until ``start()`` returns would
        hold the start-up of a host with more netns than it has slots.
        """
        with contextlib.ExitStack() as stack:
            # Subscribe before listing so that nothing between the two is lost.
            events = stack.enter_context(open_event_socket())
            inotify = stack.enter_context(contextlib.closing(Inotify()))
            mounts = stack.enter_context(contextlib.closing(MountWatcher()))
            nsids = stack.enter_context(contextlib.closing(NsidClient()))
            self._watch_dirs(inotify)
            async with send_channel:
                found: list[NetnsAdded] = []
                await self._scan(nsids, found)
                task_status.started(found)
                wake_send, wake_receive = trio.open_memory_channel[_Wake](64)
                self._requests = wake_send.clone()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._follow_nsids, events, wake_send.clone())
                    nursery.start_soon(self._follow_dirs, inotify, wake_send.clone())
                    nursery.start_soon(self._follow_mounts, mounts, wake_send)
                    async for wake in wake_receive:
                        for record in await self._handle(wake, nsids):
                            await send_channel.send(record)

    def recheck(self) -> None:
        """Look again at what exists: a safety net for what no event tells.

        A netns that only a process reached (no file) and that our own sockets keep alive
        after the process died is never destroyed, so no RTM_DELNSID comes for it; and a new
        one can appear in a way no event shows. The engine calls this periodically.
        """
        if self._requests is None:
            return
        for wake in (_Wake(path_gone=True), _Wake(rescan=True)):
            with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
                self._requests.send_nowait(wake)

    def _watch_dirs(self, inotify: Inotify) -> None:
        # `ip netns add` makes /run/netns too; making it first lets us watch it from the start.
        os.makedirs(self.named_dir, mode=0o755, exist_ok=True)
        for directory in (self.named_dir, *self.runtime_dirs):
            if os.path.isdir(directory):
                inotify.watch(directory, IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO)

    async def _follow_nsids(self, sock: socket.socket, wake: trio.MemorySendChannel[_Wake]) -> None:
        async with wake:
            while True:
                await trio.lowlevel.wait_readable(sock)
                try:
                    buf = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    if exc.errno != errno.ENOBUFS:
                        raise
                    logger.warning("nsid events were lost (ENOBUFS): rescanning")
                    await wake.send(_Wake(rescan=True))
                    continue
                for event in parse_events(buf):
                    if event.added:
                        await wake.send(_Wake(nsid_added=event.nsid))
                    else:
                        await wake.send(_Wake(nsid_removed=event.nsid))

    async def _follow_dirs(self, inotify: Inotify, wake: trio.MemorySendChannel[_Wake]) -> None:
        async with wake:
            while True:
                for event in await inotify.read():
                    if event.mask & IN_Q_OVERFLOW:
                        await wake.send(_Wake(rescan=True))
                    elif event.mask & (IN_CREATE | IN_MOVED_TO):
                        # The file exists before its bind mount: wait for the mount.
                        self._pending_names.add(os.path.join(event.directory, event.name))
                        await wake.send(_Wake())
                    elif event.mask & (IN_DELETE | IN_MOVED_FROM):
                        self._pending_names.discard(os.path.join(event.directory, event.name))
                        await wake.send(_Wake(path_gone=True))

    async def _follow_mounts(
        self, mounts: MountWatcher, wake: trio.MemorySendChannel[_Wake]
    ) -> None:
        async with wake:
            while True:
                await mounts.changed()
                if self._pending_names:
                    await wake.send(_Wake())

    async def _handle(self, wake: _Wake, nsids: NsidClient) -> Sequence[NetnsEvent]:
        """What changed, as records to send."""
        if wake.nsid_removed is not None:
            gone = self._by_nsid.pop(wake.nsid_removed, None)
            if gone is None:
                return []
            del self._known[gone]
            return [NetnsRemoved(gone)]
        if wake.path_gone:
            return self._forget_unreachable()
        if wake.nsid_added is not None and wake.nsid_added in self._by_nsid:
            return []  # our own assignment, or already known
        found: list[NetnsAdded] = []
        if wake.rescan or wake.nsid_added is not None:
            await self._scan(nsids, found)
            return found
        for path in sorted(self._pending_names):
            if await self._consider(path, nsids, found):
                self._pending_names.discard(path)
        return found

    def _candidates(self) -> Iterator[str]:
        for directory in (self.named_dir, *self.runtime_dirs):
            try:
                names = sorted(os.listdir(directory))
            except FileNotFoundError:
                continue
            yield from (os.path.join(directory, name) for name in names)
        if self.scan_processes:
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    yield f"/proc/{entry}/ns/net"

    def _forget_unreachable(self) -> list[NetnsEvent]:
        """Forget, as removed, the netns that no file and no process reaches any more.

        Such a netns lives on only through the fds and sockets of whoever traces it (our own
        packet sockets keep it alive): it would never be destroyed, so RTM_DELNSID would never
        come. A netns whose file is gone but that still has processes stays known.
        """
        reachable = set()
        for path in self._candidates():
            with contextlib.suppress(OSError):
                reachable.add(NetnsId.of_path(path))
        removed: list[NetnsEvent] = []
        for ident in [i for i in self._known if i not in reachable]:
            nsid = self._known.pop(ident)
            self._by_nsid.pop(nsid, None)
            removed.append(NetnsRemoved(ident))
        return removed

    async def _scan(self, nsids: NsidClient, found: list[NetnsAdded]) -> None:
        started = time.perf_counter()
        for path in self._candidates():
            await self._consider(path, nsids, found)
        logger.debug("netns scan: %.3f s, %d new", time.perf_counter() - started, len(found))

    async def _consider(self, path: str, nsids: NsidClient, found: list[NetnsAdded]) -> bool:
        """Add the netns at `path` to `found` if it is new. False when `path` is not (yet) a
        netns."""
        try:
            st = os.stat(path)
        except OSError:
            return False
        ident = NetnsId.from_stat(st)
        if ident.dev != self._host.dev:
            return False  # not on nsfs: a plain file whose bind mount is not there yet
        if ident == self._host or ident in self._known:
            return True
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            if not is_netns_fd(fd) or NetnsId.from_stat(os.fstat(fd)) != ident:
                return False
            nsid = await (nsids.assign(fd) if self.assign_ids else nsids.get(fd))
        except OSError as exc:
            logger.warning("cannot get the nsid of %s: %s", path, exc)
            nsid = NETNSA_NSID_NOT_ASSIGNED
        finally:
            os.close(fd)
        self._known[ident] = nsid
        if nsid != NETNSA_NSID_NOT_ASSIGNED:
            self._by_nsid[nsid] = ident
        name = os.path.basename(path) if os.path.dirname(path) == self.named_dir else None
        found.append(NetnsAdded(netns_id=ident, path=path, name=name))
        return True
