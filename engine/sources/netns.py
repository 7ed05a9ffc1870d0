"""NetnsSource: the network namespaces of this machine, as they come and go.

Events, not polling:
- rtnetlink RTNLGRP_NSID: RTM_NEWNSID when a netns gets an id in ours (a veth end moved into it:
  every container with a network), RTM_DELNSID when a netns that has an id is destroyed;
- inotify on /run/netns (and the runtimes' netns folders) for files created and removed, plus
  mount-table changes for the bind mount that `ip netns add` puts on such a file.

Every netns found is given an id when it has none (`assign_ids`), so that its destruction always
arrives as RTM_DELNSID: that is the one reliable "gone" signal, since a bind mount can be removed
while processes still use the netns. An nsid event carries only the id: it is mapped to a netns
through the files first (the runtimes make theirs before they move a veth in), then, only if
none has it, through /proc/*/ns/net.

A netns is known by its nsfs inode, and the kernel gives a freed inode to the next netns at
once: under churn the netns seen through a new file may have the inode of one that has just
gone. Its RTM_DELNSID was queued before the inode could be reused, so the nsid events are read
before anything else is looked at, every time.

A netns found through a process only, while the source runs, is reported after
``naming_wait`` seconds, or as soon as a file reaches it: `ip netns add` and the runtimes
bind-mount the file moments after the first process entered it, and the record then carries
that path and name (found through `nsenter ... ip link set` in a half-made netns, it used to
be reported nameless, for good).

The source never keeps a netns open (that would keep it alive): consumers open a NetnsHandle from
the record's path when they need one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import time
from collections.abc import Iterable, Iterator

import attrs
import trio

from engine.netns.handle import NetnsId, host_netns_id, open_netns_fd, reaches
from engine.netns.inotify import Inotify
from engine.netns.mounts import MountWatcher
from engine.netns.rtnl import NETNSA_NSID_NOT_ASSIGNED, NsidClient, open_event_socket
from engine.process import age as process_age
from engine.records import NetnsAdded, NetnsEvent, NetnsRemoved
from engine.sources.netns_paths import NAMED_NETNS_DIR, RUNTIME_NETNS_DIRS, process_of
from engine.sources.netns_wake import Feeds, Wake, next_wake

logger = logging.getLogger(__name__)

NAMING_WAIT = 1.0
# Netns that lost their last file are looked for among the processes this long after the
# first of them: one look at /proc for a burst of removals.
ORPHAN_BATCH = 0.05
WAKE_CHANNEL = 256


@attrs.define
class NetnsSource:
    named_dir: str = NAMED_NETNS_DIR
    runtime_dirs: tuple[str, ...] = RUNTIME_NETNS_DIRS
    scan_processes: bool = True
    assign_ids: bool = True
    naming_wait: float = NAMING_WAIT
    _known: dict[NetnsId, int] = attrs.field(factory=dict, init=False)  # reported or deferred
    _by_nsid: dict[int, NetnsId] = attrs.field(factory=dict, init=False)
    _files: dict[str, NetnsId] = attrs.field(factory=dict, init=False)
    _files_of: dict[NetnsId, set[str]] = attrs.field(factory=dict, init=False)
    _paths: dict[NetnsId, str] = attrs.field(factory=dict, init=False)  # how it was found
    _orphans: set[NetnsId] = attrs.field(factory=set, init=False)  # their last file went
    _orphans_due: float | None = attrs.field(default=None, init=False)
    _deferred: dict[NetnsId, tuple[str, float]] = attrs.field(factory=dict, init=False)
    _feeds: Feeds = attrs.field(factory=Feeds, init=False)
    _host: NetnsId = attrs.field(factory=host_netns_id, init=False)
    _requests: trio.MemorySendChannel[Wake] | None = attrs.field(default=None, init=False)

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
        async with contextlib.AsyncExitStack() as stack:
            # Subscribe before listing so that nothing between the two is lost.
            events = stack.enter_context(open_event_socket())
            inotify = stack.enter_context(contextlib.closing(Inotify()))
            mounts = stack.enter_context(contextlib.closing(MountWatcher()))
            nsids = await stack.enter_async_context(NsidClient())
            # `ip netns add` makes /run/netns too; making it first lets us watch it from the start.
            os.makedirs(self.named_dir, mode=0o755, exist_ok=True)
            self._feeds.watch_dirs(inotify, (self.named_dir, *self.runtime_dirs))
            async with send_channel:
                found: list[NetnsEvent] = []
                await self._scan(nsids, found, defer=False)
                task_status.started([r for r in found if isinstance(r, NetnsAdded)])
                wake_send, wake_receive = trio.open_memory_channel[Wake](WAKE_CHANNEL)
                self._requests = wake_send.clone()
                feeds = self._feeds
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(feeds.follow_nsids, events, wake_send.clone())
                    nursery.start_soon(feeds.follow_dirs, inotify, wake_send.clone())
                    nursery.start_soon(feeds.follow_mounts, mounts, wake_send)
                    while True:
                        wake = await next_wake(wake_receive, self._next_deadline())
                        for record in await self._handle(wake, events, nsids):
                            await send_channel.send(record)

    def recheck(self) -> None:
        """Look again at what exists: a safety net for what no event tells.

        A netns that only a process reached (no file) and that our own sockets keep alive
        after the process died is never destroyed, so no RTM_DELNSID comes for it; and a new
        one can appear in a way no event shows. The engine calls this periodically.
        """
        if self._requests is None:
            return
        with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
            self._requests.send_nowait(Wake(sweep=True, rescan=True))

    def nsid_of(self, ident: NetnsId) -> int | None:
        """The id this source gave (or found) the netns ``ident``, if it has one. An id stays
        a netns's for as long as it lives: whoever holds the netns open may trust it."""
        nsid = self._known.get(ident)
        return None if nsid is None or nsid < 0 else nsid

    def netns_of_nsid(self, nsid: int) -> NetnsId | None:
        return self._by_nsid.get(nsid)  # the netns of that id in the host, if known

    def _next_deadline(self) -> float:
        """When a deferred netns or a batch of orphans is due."""
        deadlines = [deadline for _, deadline in self._deferred.values()]
        if self._orphans_due is not None:
            deadlines.append(self._orphans_due)
        return min(deadlines, default=math.inf)

    async def _handle(
        self, wake: Wake, events: socket.socket, nsids: NsidClient
    ) -> list[NetnsEvent]:
        """What changed, as records to send, in the order it happened."""
        records: list[NetnsEvent] = []
        # First, always: a removal there may free the inode of a netns seen below.
        unknown, lost = await self._read_nsids(events, nsids, records)
        found: list[NetnsEvent] = []
        for path in wake.gone:
            self._file_gone(path)
        if self._orphans_due is not None and trio.current_time() >= self._orphans_due:
            records += self._check_orphans()
        if wake.sweep or lost:
            records += self._forget_unreachable()
        pending = self._feeds.pending_names
        if pending:
            pending.difference_update(
                await self._consider(sorted(pending), nsids, found, defer=True)
            )
        unknown -= self._by_nsid.keys()  # the pending names may have told already
        if wake.rescan or lost:
            await self._scan(nsids, found, defer=True)
        elif unknown:
            # The runtimes' files first; the processes only for an id no file explains.
            await self._scan_files(nsids, found, only_new=True)
            if any(nsid not in self._by_nsid for nsid in unknown) and self.scan_processes:
                await self._consider(self._process_paths(), nsids, found, defer=True)
        records += found
        records += self._due(trio.current_time())
        return records

    async def _read_nsids(
        self, sock: socket.socket, nsids: NsidClient, records: list[NetnsEvent]
    ) -> tuple[set[int], bool]:
        """Apply every nsid event waiting: removals become records; returns the ids added
        that no known netns has, and whether events were lost.

        Ids are reused as fast as inodes, and the kernel frees an id before it says so: the
        netns an RTM_DELNSID names by id is asked whether it still has that id before it is
        forgotten (the id may already be a new netns's, one we assigned it to).
        """
        events, lost = self._feeds.read_nsids(sock)
        gone = {
            ident: e.nsid
            for e in events
            if not e.added and (ident := self._by_nsid.get(e.nsid)) is not None
        }
        for ident in await self._still_without(gone, nsids):
            records += self._forget(ident)
        # After the removals: an id given anew just after it was freed is a new netns's.
        return {e.nsid for e in events if e.added} - self._by_nsid.keys(), lost

    async def _still_without(self, gone: dict[NetnsId, int], nsids: NsidClient) -> list[NetnsId]:
        """The netns of ``gone`` (each with the id an RTM_DELNSID named) that do not have that
        id any more, or that no path reaches: asked all at once."""
        fds: dict[NetnsId, int] = {}
        try:
            for ident in gone:
                paths = {*self._files_of.get(ident, ()), self._paths.get(ident, "")} - {""}
                fd = next((fd for p in paths if (fd := open_netns_fd(p, ident)) is not None), None)
                if fd is not None:
                    fds[ident] = fd
            ids = await nsids.get_all(list(fds.values()))
        finally:
            for fd in fds.values():
                os.close(fd)
        now = dict(zip(fds, ids, strict=True))
        return [i for i in gone if now.get(i) != gone[i]]

    def _forget(self, ident: NetnsId) -> list[NetnsEvent]:
        """Forget a netns; its record, unless it was never reported."""
        nsid = self._known.pop(ident, NETNSA_NSID_NOT_ASSIGNED)
        self._paths.pop(ident, None)
        if self._by_nsid.get(nsid) == ident:
            del self._by_nsid[nsid]
        for path in self._files_of.pop(ident, set()):
            self._files.pop(path, None)
        if self._deferred.pop(ident, None) is not None:
            return []
        return [NetnsRemoved(ident)]

    def _file_gone(self, path: str) -> None:
        """A file of a known netns went (or now reaches another): if it was its last one, the
        netns is checked for processes in the next batch (``_check_orphans``)."""
        ident = self._files.pop(path, None)
        if ident is None:
            return
        left = self._files_of.get(ident, set())
        left.discard(path)
        if not left and ident in self._known:
            self._orphans.add(ident)
            if self._orphans_due is None:
                self._orphans_due = trio.current_time() + ORPHAN_BATCH

    def _check_orphans(self) -> list[NetnsEvent]:
        """The netns whose last file went and that no process is in any more are gone.

        Such a netns may live on through the fds and sockets of whoever traces it (our own
        packet sockets keep it alive): it would never be destroyed, so RTM_DELNSID would never
        come. A netns whose file is gone but that still has processes stays known. One look
        at every process serves every netns of the batch.
        """
        orphans = {i for i in self._orphans if i in self._known and not self._files_of.get(i)}
        self._orphans.clear()
        self._orphans_due = None
        for path in self._process_paths() if orphans else ():
            with contextlib.suppress(OSError):
                orphans.discard(NetnsId.of_path(path))
            if not orphans:
                break
        return [record for ident in orphans for record in self._forget(ident)]

    def _forget_unreachable(self) -> list[NetnsEvent]:
        """Forget, as removed, the netns that no file and no process reaches any more (every
        known one looked at)."""
        reachable = set()
        for path in [*self._file_paths(), *self._process_paths()]:
            with contextlib.suppress(OSError):
                ident = NetnsId.of_path(path)
                reachable.add(ident)
                if self._files.get(path, ident) != ident:
                    self._file_gone(path)
        for path in [p for p in self._files if not os.path.lexists(p)]:
            self._file_gone(path)
        records: list[NetnsEvent] = []
        for ident in [i for i in self._known if i not in reachable]:
            records += self._forget(ident)
        return records

    def _due(self, now: float) -> list[NetnsEvent]:
        """The netns found through a process whose naming wait is over, reported by it (or
        by another process, if that one left)."""
        due = [i for i, (_, deadline) in self._deferred.items() if deadline <= now]
        if not due:
            return []
        paths = {i: self._deferred[i][0] for i in due if reaches(self._deferred[i][0], i)}
        missing = set(due) - paths.keys()
        for path in self._process_paths() if missing else ():
            with contextlib.suppress(OSError):
                ident = NetnsId.of_path(path)
                if ident in missing:
                    missing.discard(ident)
                    paths[ident] = path
        records: list[NetnsEvent] = []
        for ident in due:
            if ident in paths:
                del self._deferred[ident]
                self._paths[ident] = paths[ident]
                records.append(NetnsAdded(netns_id=ident, path=paths[ident], name=None))
            else:
                self._forget(ident)  # no process left in it: forgotten, never reported
        return records

    def _file_paths(self) -> Iterator[str]:
        for directory in (self.named_dir, *self.runtime_dirs):
            try:
                names = sorted(os.listdir(directory))
            except FileNotFoundError:
                continue
            yield from (os.path.join(directory, name) for name in names)

    def _process_paths(self) -> Iterator[str]:
        if self.scan_processes:
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    yield f"/proc/{entry}/ns/net"

    async def _scan(self, nsids: NsidClient, found: list[NetnsEvent], *, defer: bool) -> None:
        started = time.perf_counter()
        await self._scan_files(nsids, found, only_new=False)
        await self._consider(self._process_paths(), nsids, found, defer=defer)
        logger.debug("netns scan: %.3f s, %d new", time.perf_counter() - started, len(found))

    async def _scan_files(
        self, nsids: NsidClient, found: list[NetnsEvent], *, only_new: bool
    ) -> None:
        paths = [p for p in self._file_paths() if not (only_new and p in self._files)]
        await self._consider(paths, nsids, found, defer=False)

    async def _consider(
        self, paths: Iterable[str], nsids: NsidClient, found: list[NetnsEvent], *, defer: bool
    ) -> set[str]:
        """Add each new netns that ``paths`` reach to ``found`` (or defer it: see the module
        doc); return the paths that are netns (a file's bind mount may not be there yet).

        The ids of the new ones are asked for in one round trip: under churn a burst of
        netns comes at once, and a round trip to the nsid thread costs milliseconds when the
        CPUs are busy.
        """
        netns: set[str] = set()
        new: dict[NetnsId, tuple[str, int]] = {}  # the path each was first seen by, an fd
        again: list[tuple[str, NetnsId]] = []  # more paths to those, in order
        try:
            for path in paths:
                try:
                    ident = NetnsId.from_stat(os.stat(path))
                except OSError:
                    continue
                if ident.dev != self._host.dev:
                    continue  # not on nsfs: a plain file whose bind mount is not there yet
                if ident == self._host or ident in self._known or ident in new:
                    netns.add(path)
                    again.append((path, ident))
                    continue
                fd = open_netns_fd(path, ident)
                if fd is not None:
                    netns.add(path)
                    new[ident] = (path, fd)
            fds = [fd for _, fd in new.values()]
            try:
                ids = await (nsids.assign_all(fds) if self.assign_ids else nsids.get_all(fds))
            except OSError as exc:
                ids = [exc] * len(fds)
        finally:
            for _, fd in new.values():
                os.close(fd)
        for (ident, (path, _)), got in zip(new.items(), ids, strict=True):
            if isinstance(got, OSError):
                logger.warning("cannot get the nsid of %s: %s", path, got)
            nsid = NETNSA_NSID_NOT_ASSIGNED if isinstance(got, OSError) else got
            self._register(ident, path, nsid, found, defer=defer)
        for path, ident in again:
            if ident in self._known and not path.startswith("/proc/"):
                self._note_file(path, ident)
                if self._deferred.pop(ident, None) is not None:
                    found.append(self._added(ident, path))
        return netns

    def _register(
        self, ident: NetnsId, path: str, nsid: int, found: list[NetnsEvent], *, defer: bool
    ) -> None:
        self._known[ident] = nsid
        self._paths[ident] = path
        if nsid != NETNSA_NSID_NOT_ASSIGNED:
            # An id is given again only once its netns is being destroyed, even if that
            # netns's RTM_DELNSID has not been read yet.
            old = self._by_nsid.get(nsid)
            if old is not None and old != ident:
                found += self._forget(old)
            self._by_nsid[nsid] = ident
        if not path.startswith("/proc/"):
            self._note_file(path, ident)
            found.append(self._added(ident, path))
        elif defer:
            self._deferred[ident] = (path, trio.current_time() + self.naming_wait)
        else:
            # At start, a netns that no file reaches: how long its process has run says how
            # long it has existed at least (engine/world/state.py, ``add_netns``).
            found.append(NetnsAdded(netns_id=ident, path=path, name=None, existed=_existed(path)))

    def _note_file(self, path: str, ident: NetnsId) -> None:
        if self._files.get(path, ident) != ident:
            self._file_gone(path)  # the name now leads to another netns
        self._files[path] = ident
        self._files_of.setdefault(ident, set()).add(path)

    def _added(self, ident: NetnsId, path: str) -> NetnsAdded:
        name = os.path.basename(path) if os.path.dirname(path) == self.named_dir else None
        return NetnsAdded(netns_id=ident, path=path, name=name)


def _existed(path: str) -> float:
    """How long the netns of a process (``/proc/PID/ns/net``) has existed at least: as long as
    the process has run, for a process made in it or after it, as a container's are (a
    runtime makes the netns, then the container's processes in it). A process that made a
    new netns for itself long after it started looks older than its netns: no container
    runtime makes a container's netns that way."""
    pid = process_of(path)
    return 0.0 if pid is None else process_age(pid) or 0.0
