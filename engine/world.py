"""What the engine believes exists: containers, network namespaces, and what is selected.

Pure bookkeeping (no I/O): the engine feeds it source records and asks it which netns
should carry per-netns programs and which container a record came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from engine.containers import Container
from engine.selection import Selection


@attrs.frozen
class NetnsTarget:
    """A netns that should carry the per-netns programs, and the containers in it."""

    inode: int
    path: str
    containers: tuple[Container, ...]

    @property
    def label(self) -> str:
        names = ",".join(c.name for c in self.containers)
        return f"netns:[{self.inode}]" + (f" ({names})" if names else "")


@attrs.define
class World:
    selection: Selection
    containers: dict[str, Container] = attrs.Factory(dict)
    netns_paths: dict[int, str] = attrs.Factory(dict)  # netns inode → a path that reaches it
    host_netns: int | None = None
    host_mntns: int | None = None
    host_ifindexes: dict[int, int] = attrs.Factory(dict)  # host-side veth → its netns inode

    # Lookups by namespace or cgroup id, and each container's JSON, made once per change
    # rather than once per event.
    _index: dict[tuple[str, int], Container] = attrs.Factory(dict)
    _json: dict[str, Mapping[str, Any]] = attrs.Factory(dict)

    def add_container(self, container: Container) -> None:
        self.containers[container.id] = container
        self._reindex()

    def remove_container(self, container_id: str) -> Container | None:
        removed = self.containers.pop(container_id, None)
        self._reindex()
        return removed

    def _reindex(self) -> None:
        self._index.clear()
        self._json.clear()
        # Insertion order: the first container of a shared netns names it, as before.
        for c in reversed(list(self.containers.values())):
            for attribute in ("mntns_inode", "netns_inode", "cgroup_id"):
                value = getattr(c, attribute)
                if value is not None:
                    self._index[(attribute, value)] = c

    def container_json(self, container: Container) -> Mapping[str, Any]:
        """The container's JSON object, shared by every event that names it."""
        cached = self._json.get(container.id)
        if cached is None:
            cached = self._json[container.id] = container.to_json()
        return cached

    def add_netns(self, inode: int, path: str) -> None:
        self.netns_paths[inode] = path

    def remove_netns(self, inode: int) -> None:
        self.netns_paths.pop(inode, None)

    def selected(self) -> list[Container]:
        return [c for c in self.containers.values() if self.selection.matches(c)]

    def selected_mntns(self) -> set[int]:
        """Mount namespace ids whose processes the in-kernel filter lets through."""
        ids = {c.mntns_inode for c in self.selected() if c.mntns_inode is not None}
        if self.selection.includes_host and self.host_mntns is not None:
            ids.add(self.host_mntns)
        return ids

    def desired_netns(self) -> dict[int, NetnsTarget]:
        """The netns that should carry per-netns programs, by inode.

        With no selection every netns known (but the host's) is traced as soon as it is
        seen, before the runtime says whose it is; with a selection, only the netns of
        selected containers. Containers on the host network never make the host's netns a
        target (their traffic is the host's).
        """
        by_inode: dict[int, list[Container]] = {}
        for c in self.containers.values():
            if c.netns_inode is not None and c.netns_inode != self.host_netns:
                by_inode.setdefault(c.netns_inode, []).append(c)
        out: dict[int, NetnsTarget] = {}
        if self.selection.selects_everything:
            for inode, path in self.netns_paths.items():
                if inode != self.host_netns:
                    out[inode] = NetnsTarget(inode, path, tuple(by_inode.get(inode, ())))
        for inode, members in by_inode.items():
            chosen = [c for c in members if self.selection.matches(c)]
            if not chosen:
                continue
            reach: str | None = self.netns_paths.get(inode) or next(
                (c.netns_path for c in chosen if c.netns_path), None
            )
            if reach is not None:
                out[inode] = NetnsTarget(inode, reach, tuple(members))
        return out

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
        mntns = _first_id(data, ("mntns_id", "mntns"))
        if mntns is not None:
            return self._find("mntns_inode", mntns)
        netns = _first_id(data, ("netns_id", "netns"))
        if netns is not None and netns != self.host_netns:
            return self._find("netns_inode", netns)
        ifindex = data.get("ifindex")
        if isinstance(ifindex, int) and ifindex in self.host_ifindexes:
            return self._find("netns_inode", self.host_ifindexes[ifindex])
        cgroup = _first_id(data, ("cgroup_id",))
        return None if cgroup is None else self._find("cgroup_id", cgroup)

    def _find(self, attribute: str, value: int) -> Container | None:
        return self._index.get((attribute, value))


def _first_id(data: Mapping[str, Any], keys: tuple[str, ...]) -> int | None:
    """The first non-zero integer among ``keys`` (0 is how a gadget says "unknown")."""
    for key in keys:
        value = data.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value:
            return value
    return None
