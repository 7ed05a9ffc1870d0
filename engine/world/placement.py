"""Where a buffer record came from, and whether it may reach consumers now (docs/events.md).

The record's origin (engine/events/origin.py) decides:

1. a task (tracing programs): its mount namespace names the container, its cgroup when the
   mount namespace does not; when neither names one, the gadget's own fields may
   (``World.container_for``, e.g. a mount namespace remembered from another moment);
2. a packet: a socket filter's netns, or a classifier's host-side veth (``ifindex``), as the
   gadget's own ``netns_id`` and ``ifindex`` fields would (``World.container_for``);
3. the kernel itself (an interrupt, a softirq, a kernel thread: no task): the gadget's own
   fields, as before the origin existed; a record that names nothing is the host's.

With a selection, this is the check behind the kernel's (which drops unselected tasks'
records before they are written): a record attributed outside the selection is dropped, and
one of a mount namespace no container claims yet is held until one does (or its time is up).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.events.origin import Origin
from engine.sources.containers import Container
from engine.world.state import Verdict, World, first_id

_GADGET_MNTNS = ("mntns_id", "mntns")
_GADGET_NETNS = ("netns_id", "netns", "ifindex")


def place(
    world: World, origin: Origin, data: Mapping[str, Any], now: float
) -> tuple[Verdict, int, Container | None]:
    """The verdict on a record, the key it is held under (0: none) and its container."""
    if origin.is_packet:
        # A classifier's device is the host side of a veth (a function shared with socket
        # filters reads the host's netns there): its ifindex names the container then.
        fields = {"netns_id": origin.netns, "ifindex": origin.ifindex}
        verdict, inode = world.screen(fields)
        return verdict, inode, world.container_for(fields)
    if origin.is_task:
        container = world.find("mntns_inode", origin.mntns)
        if container is None and origin.cgroup > 1:  # 1: the v2 root, every task on v1 hosts
            container = world.find("cgroup_id", origin.cgroup)
        if container is None:
            container = world.container_for(data)
        return (*_by_mntns(world, origin.mntns, container, now), container)
    container = world.container_for(data)
    mntns = first_id(data, _GADGET_MNTNS)
    if mntns is not None:
        return (*_by_mntns(world, mntns, container, now), container)
    if any(first_id(data, (key,)) is not None for key in _GADGET_NETNS):
        verdict, inode = world.screen(data)
        return verdict, inode, container
    return (*_by_mntns(world, world.host_mntns or 0, container, now), container)


def _by_mntns(
    world: World, mntns: int, container: Container | None, now: float
) -> tuple[Verdict, int]:
    if not world.filters_tasks:
        return Verdict.DELIVER, 0
    selection = world.selection
    if container is not None:
        return (Verdict.DELIVER if selection.matches(container) else Verdict.DROP), 0
    if mntns and mntns == world.host_mntns:
        return (Verdict.DELIVER if selection.includes_host else Verdict.DROP), 0
    pending = world.mntns_pending
    if not mntns or not world.follows_containers or pending.is_rejected(mntns):
        return Verdict.DROP, 0
    world.hold_mntns(mntns, now)
    return Verdict.HOLD, mntns
