"""What the engine believes exists: containers, network namespaces, and what is selected.

Pure bookkeeping (no I/O, no clock): the engine feeds it source records, with the time when
that matters, and asks it which netns should carry per-netns programs, which container a
record came from, and whether a record may reach consumers yet.

Speculative attach: a container runtime creates a container's netns 0.1-1.3 s before it
reports the container, and the container's first packets leave within milliseconds of that
report. A netns under a runtime's netns folder that no known container claims is therefore
*pending identification* (one reached through a process, before the runtime's file is
found, too): with a selection it is traced at once, for up to
``identify_timeout`` seconds, and the records that come from it are held (engine/held.py)
until the runtime says whose it is (``settle``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from engine.sources.containers import Container
from engine.sources.netns_paths import is_runtime_netns
from engine.world.mntns import PendingMntns
from engine.world.selection import Selection

DEFAULT_IDENTIFY_TIMEOUT = 5.0


@attrs.frozen
class NetnsTarget:
    """A netns that should carry the per-netns programs, and the containers in it.

    ``speculative``: traced before the runtime said whose it is (pending identification).
    """

    inode: int
    path: str
    containers: tuple[Container, ...]
    speculative: bool = False

    @property
    def label(self) -> str:
        names = ",".join(c.name for c in self.containers)
        return f"netns:[{self.inode}]" + (f" ({names})" if names else "")


class Verdict(enum.Enum):
    """What to do with a gadget record now (``World.screen``)."""

    DELIVER = "deliver"
    HOLD = "hold"  # its netns is pending identification
    DROP = "drop"  # its netns belongs to no selected container


@attrs.frozen
class Identified:
    """A netns that stopped pending: its records are released (``keep``) or dropped;
    ``container`` is None when the runtime never claimed it (timeout, or the netns vanished)."""

    inode: int
    container: Container | None
    keep: bool


@attrs.define
class World:
    selection: Selection
    containers: dict[str, Container] = attrs.Factory(dict)  # by Container.key
    netns_paths: dict[int, str] = attrs.Factory(dict)  # netns inode → a path that reaches it
    host_netns: int | None = None
    host_mntns: int | None = None
    host_ifindexes: dict[int, int] = attrs.Factory(dict)  # host-side veth → its netns inode
    # Host-side veths with classifiers attached ahead of their netns (engine/preattach.py):
    # their records are held by ``preattached_key`` until the veth is handed to a netns.
    preattached: set[int] = attrs.Factory(set)
    identify_timeout: float = DEFAULT_IDENTIFY_TIMEOUT
    _pending: dict[int, float] = attrs.Factory(dict)  # netns inode → identify deadline
    _vanished: list[int] = attrs.Factory(list)  # pending netns removed before they settled
    # Netns traced speculatively that turned out not to be the user's, and the host-side veths
    # they had: their records still in the buffers must not reach consumers (until it goes).
    _rejected: set[int] = attrs.Factory(set)
    # Netns the source saw go while containers still claim them: their paths lead nowhere,
    # and a second attach there would give its programs a second story.
    _gone: set[int] = attrs.Factory(set)
    _rejected_ifindexes: dict[int, int] = attrs.Factory(dict)
    _unselected_netns: tuple[Selection, frozenset[int]] | None = None
    # Whether a runtime source says whose namespaces are whose (``open_engine(containers=)``):
    # without one, a mount namespace the engine does not know stays unknown.
    follows_containers: bool = True
    # Mount namespaces records named before a container claimed them (engine/world/mntns.py).
    mntns_pending: PendingMntns = attrs.field(
        default=attrs.Factory(lambda self: PendingMntns(self.identify_timeout), takes_self=True)
    )
    # Told when a mount namespace starts pending, so that its timeout is waited for.
    on_pending: Callable[[], None] | None = None

    # Lookups by namespace or cgroup id, and each container's JSON, made once per change
    # rather than once per event.
    _index: dict[tuple[str, int], Container] = attrs.Factory(dict)
    _json: dict[str, Mapping[str, Any]] = attrs.Factory(dict)
    _members: dict[int, list[Container]] = attrs.Factory(dict)  # by netns, but the host's
    # Netns changed since ``desired_changes`` last looked (True: removed meanwhile), and the
    # selection it looked with.
    _dirty: dict[int, bool] = attrs.Factory(dict)
    _looked_with: Selection | None = None
    # Changes at every reindex: what readers cached from the lookups is stale then.
    generation: int = 0

    def add_container(self, container: Container) -> None:
        old = self.containers.get(container.key)
        self._touch(None if old is None else old.netns_inode)
        self._touch(container.netns_inode)
        self.containers[container.key] = container
        inode = container.netns_inode
        if old is None:
            self._gone.discard(inode)  # a new container's netns is alive: an inode reused
        if inode in self._rejected and self.selection.matches(container):
            # Reported after its netns timed out pending (its runtime was away longer than
            # the identify timeout): what comes from that netns is the user's again.
            self._rejected.discard(inode)
            for ifindex in [i for i, n in self._rejected_ifindexes.items() if n == inode]:
                del self._rejected_ifindexes[ifindex]
        self._reindex()

    def remove_container(self, container: Container) -> Container | None:
        removed = self.containers.pop(container.key, None)
        self._touch(None if removed is None else removed.netns_inode)
        self._reindex()
        self._gone &= self._members.keys()
        return removed

    def _reindex(self) -> None:
        self.generation += 1
        self._index.clear()
        self._json.clear()
        self._unselected_netns = None
        self._members.clear()
        for c in self.containers.values():
            if c.netns_inode is not None and c.netns_inode != self.host_netns:
                self._members.setdefault(c.netns_inode, []).append(c)
        # Insertion order: the first container of a shared netns names it, as before.
        for c in reversed(list(self.containers.values())):
            for attribute in ("mntns_inode", "netns_inode", "cgroup_id"):
                value = getattr(c, attribute)
                if value is not None:
                    self._index[(attribute, value)] = c

    def container_json(self, container: Container) -> Mapping[str, Any]:
        """The container's JSON object, shared by every event that names it."""
        cached = self._json.get(container.key)
        if cached is None:
            cached = self._json[container.key] = container.to_json()
        return cached

    def add_netns(self, inode: int, path: str, now: float, existed: float = 0.0) -> None:
        """A netns was seen at ``now``: pending if a runtime made it and no container claims it.

        ``existed``: how long the netns is known to have existed already (NetnsAdded.existed).
        One that has existed for ``identify_timeout`` seconds and more, unclaimed, is not a
        container its runtime is about to report (runtimes report theirs 0.1-1.3 s after
        making the netns): it is not pending, and so not traced speculatively. Found at start,
        a process that no runtime knows, holding a netns with a veth on the runtime's bridge
        (a container whose daemon was killed while it was being made: its `runc init` waits
        for ever), would otherwise get the classifiers on its veth for ``identify_timeout``
        seconds at every start, and a gadget's own maps would count its packets. If a runtime
        does report a selected container in it, it is traced then, as any.

        With no selection every netns is traced and its records delivered as they come, as
        before: nothing is pending then.
        """
        self.netns_paths[inode] = path
        self._gone.discard(inode)
        self._touch(inode)
        if (
            not self.selection.selects_everything
            and is_runtime_netns(path)
            and inode != self.host_netns
            and inode not in self._pending
            and ("netns_inode", inode) not in self._index
            and existed < self.identify_timeout
        ):
            self._pending[inode] = now + self.identify_timeout

    def remove_netns(self, inode: int) -> None:
        self.netns_paths.pop(inode, None)
        self._dirty[inode] = True
        if inode in self._members:
            self._gone.add(inode)
        if self._pending.pop(inode, None) is not None:
            self._vanished.append(inode)
        self._rejected.discard(inode)
        for ifindex in [i for i, n in self._rejected_ifindexes.items() if n == inode]:
            del self._rejected_ifindexes[ifindex]

    def is_pending(self, inode: int) -> bool:
        return inode in self._pending

    def next_deadline(self) -> float | None:
        """When the earliest pending netns or mount namespace times out, if any is pending."""
        deadlines = [*self._pending.values(), self.mntns_pending.next_deadline()]
        return min((d for d in deadlines if d is not None), default=None)

    @property
    def filters_tasks(self) -> bool:
        """Whether some task's records are not the user's (``--exclude`` alone counts)."""
        return not self.selection.selects_everything or bool(self.selection.excludes)

    def hold_mntns(self, mntns: int, now: float) -> None:
        """Records of ``mntns``, which no container claims yet, are held from ``now`` on."""
        if self.mntns_pending.pend(mntns, now) and self.on_pending is not None:
            self.on_pending()

    def settle(self, now: float) -> list[Identified]:
        """End the pending state of every netns a container now claims, or whose time is up.

        A netns whose records may not reach consumers (its containers are all unselected, or
        nobody claimed it while there is a selection) is remembered as rejected.
        """
        out: list[Identified] = []
        for inode in self._vanished:
            out.append(self._settled(inode, None))
        self._vanished.clear()
        for inode, deadline in list(self._pending.items()):
            claimer = self.find("netns_inode", inode)
            if claimer is None and now < deadline:
                continue
            del self._pending[inode]
            self._touch(inode)
            out.append(self._settled(inode, claimer))
        claimed = frozenset(value for key, value in self._index if key == "mntns_inode")
        for mntns in self.mntns_pending.due(now, claimed):
            claimer = self.find("mntns_inode", mntns)
            if claimer is None:
                # Nobody's container: a host process with mounts of its own, or a container
                # never reported; from now on the kernel drops what it writes (if not taken).
                keep = self.selection.includes_host
                if not keep:
                    self.mntns_pending.reject(mntns)
            else:
                keep = self.selection.matches(claimer)
            out.append(Identified(mntns, claimer, keep))
        return out

    def _settled(self, inode: int, claimer: Container | None) -> Identified:
        if claimer is None:
            keep = self.selection.selects_everything
        else:
            keep = any(
                self.selection.matches(c)
                for c in self.containers.values()
                if c.netns_inode == inode
            )
        if not keep:
            self._rejected.add(inode)
            for ifindex, netns in self.host_ifindexes.items():
                if netns == inode:
                    self._rejected_ifindexes[ifindex] = inode
        return Identified(inode, claimer, keep)

    def forget_ifindex(self, ifindex: int) -> None:
        """A classifier left this host-side veth; its records may still be in the buffers."""
        inode = self.host_ifindexes.pop(ifindex, None)
        if inode is not None and inode in self._rejected:
            self._rejected_ifindexes[ifindex] = inode

    def screen(self, data: Mapping[str, Any]) -> tuple[Verdict, int]:
        """Whether a gadget record may reach consumers now, and the netns it came from (0:
        not known).

        Only records that name a netns (rules 2 and 3 of ``container_for``) are screened:
        static probes carry a mount namespace and are filtered in the kernel.
        """
        if self.selection.selects_everything and not self._pending and not self.preattached:
            return Verdict.DELIVER, 0
        if first_id(data, ("mntns_id", "mntns")) is not None:
            return Verdict.DELIVER, 0
        inode = first_id(data, ("netns_id", "netns"))
        if inode is None or inode == self.host_netns:
            ifindex = data.get("ifindex")
            if not isinstance(ifindex, int):
                return Verdict.DELIVER, 0
            if ifindex in self.preattached:
                # Even once a netns has it: until then earlier records wait here, in order.
                return Verdict.HOLD, preattached_key(ifindex)
            inode = self.host_ifindexes.get(ifindex) or self._rejected_ifindexes.get(ifindex)
            if inode is None:
                return Verdict.DELIVER, 0
        if inode in self._pending:
            return Verdict.HOLD, inode
        if self.selection.selects_everything:
            return Verdict.DELIVER, inode
        if inode in self._rejected or inode in self._netns_of_unselected():
            return Verdict.DROP, inode
        return Verdict.DELIVER, inode

    def _netns_of_unselected(self) -> frozenset[int]:
        """Netns whose containers are all unselected (made once per change of either)."""
        cached = self._unselected_netns
        if cached is not None and cached[0] is self.selection:
            return cached[1]
        inside: dict[int, bool] = {}
        for c in self.containers.values():
            if c.netns_inode is not None and c.netns_inode != self.host_netns:
                inside[c.netns_inode] = inside.get(c.netns_inode, False) or self.selection.matches(
                    c
                )
        found = frozenset(inode for inode, selected in inside.items() if not selected)
        self._unselected_netns = (self.selection, found)
        return found

    def selected(self) -> list[Container]:
        return [c for c in self.containers.values() if self.selection.matches(c)]

    def desired_netns(self) -> dict[int, NetnsTarget]:
        """The netns that should carry per-netns programs, by inode.

        With no selection every netns known (but the host's) is traced as soon as it is
        seen, before the runtime says whose it is; with a selection, the netns of selected
        containers, and those pending identification (``speculative``) until ``settle``
        says whose they are. Containers on the host network never make the host's netns a
        target (their traffic is the host's).
        """
        inodes = {*self.netns_paths, *self._pending, *self._members}
        return {i: t for i in inodes if (t := self._target(i)) is not None}

    def may_trace(self, inode: int | None) -> bool:
        """Whether a netns (None: one not seen yet) is, or may become, a target."""
        return inode is None or inode not in self.netns_paths or self._target(inode) is not None

    def desired_changes(self) -> list[tuple[int, NetnsTarget | None, bool]]:
        """``desired_netns`` for the netns touched since the last call (None: not traced),
        each with whether the netns of that inode was removed meanwhile (the inode may name
        another now). The cost follows the changes; a new selection changes everything."""
        dirty, self._dirty = self._dirty, {}
        if self.selection is not self._looked_with:
            self._looked_with = self.selection
            desired = self.desired_netns()
            return [
                *((i, desired.get(i), removed) for i, removed in dirty.items()),
                *((i, t, False) for i, t in desired.items() if i not in dirty),
            ]
        return [(i, self._target(i), removed) for i, removed in dirty.items()]

    def _touch(self, inode: int | None) -> None:
        if inode is not None:
            self._dirty.setdefault(inode, False)

    def _target(self, inode: int) -> NetnsTarget | None:
        """``desired_netns``'s entry for one netns."""
        if inode == self.host_netns or inode in self._gone:
            return None
        members = tuple(self._members.get(inode, ()))
        chosen = [c for c in members if self.selection.matches(c)]
        path = self.netns_paths.get(inode)
        if chosen:
            reach = path or next((c.netns_path for c in chosen if c.netns_path), None)
            if reach is not None:
                return NetnsTarget(inode, reach, members)
        if path is None:
            return None
        if self.selection.selects_everything:
            return NetnsTarget(inode, path, members)
        if inode in self._pending and not members:
            return NetnsTarget(inode, path, (), speculative=True)
        return None

    def container_for(self, data: Mapping[str, Any]) -> Container | None:
        """The container a gadget record came from, from the fields it carries.

        The first rule that applies wins (docs/events.md):

        1. ``mntns_id`` or ``mntns``: the mount namespace of the task (static probes);
        2. ``netns_id`` or ``netns``: a netns inode, as socket filters write it with
           ``engine_skb_netns_id(skb)``; the host's netns names no container, since every
           host-network container shares it with the host itself;
        3. ``ifindex``: a host-side veth that a classifier is attached to;
        4. ``cgroup_id``.
        """
        mntns = first_id(data, ("mntns_id", "mntns"))
        if mntns is not None:
            return self.find("mntns_inode", mntns)
        netns = first_id(data, ("netns_id", "netns"))
        if netns is not None and netns != self.host_netns:
            return self.find("netns_inode", netns)
        ifindex = data.get("ifindex")
        if isinstance(ifindex, int) and ifindex in self.host_ifindexes:
            return self.find("netns_inode", self.host_ifindexes[ifindex])
        cgroup = first_id(data, ("cgroup_id",))
        return None if cgroup is None else self.find("cgroup_id", cgroup)

    def find(self, attribute: str, value: int) -> Container | None:
        """The container whose ``attribute`` (mntns_inode, netns_inode, cgroup_id) is ``value``."""
        return self._index.get((attribute, value))


def preattached_key(ifindex: int) -> int:
    """Where ``Held`` keeps the records of a pre-attached veth: below every netns inode."""
    return -ifindex


def first_id(data: Mapping[str, Any], keys: tuple[str, ...]) -> int | None:
    """The first non-zero integer among ``keys`` (0 is how a gadget says "unknown")."""
    for key in keys:
        value = data.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value:
            return value
    return None
