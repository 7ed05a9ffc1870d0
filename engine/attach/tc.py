"""TC classifiers for containers, attached on the host side of each container's veth.

Direction follows Inspektor Gadget's convention for containers, from the container's point of
view: `classifier/ingress` sees what enters the container, `classifier/egress` what leaves it.
On the host end of a veth that is swapped: the host-side egress hook carries packets towards the
container, the host-side ingress hook what the container sent. See docs/tc.md.

Living beside other tools: a clsact qdisc is added only when absent and never deleted (an empty
clsact costs nothing and goes away with the veth; deleting it could take another tool's filters
added since). Our filters use priorities from PRIO_FIRST upwards that nobody else uses on that
hook, handle 1, and carry the name "engine_<owner>_<program>" so that leftovers of a dead engine
can be found (`remove_orphan_filters`).

pyroute2's sync IPRoute runs its own event loop in the calling thread and blocks: each operation
opens one in a trio worker thread (host netns, never entered elsewhere) and closes it there.
"""

from __future__ import annotations

import enum
import errno
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from engine.attach.owner import current_owner
from engine.errors import AttachError
from engine.netns import NetnsHandle, NsidClient, host_netns_id, in_netns

logger = logging.getLogger(__name__)

TC_H_CLSACT_INGRESS = 0xFFFFFFF2
TC_H_CLSACT_EGRESS = 0xFFFFFFF3
ETH_P_ALL = 0x0003
# Priorities we use: high numbers run after other tools' usual low ones.
PRIO_FIRST = 0xC000
PRIO_LAST = 0xC3FF
FILTER_HANDLE = 1
# Collisions with concurrent adders before giving up (each one means someone else got a prio).
ADD_ATTEMPTS = 64
NAME_PREFIX = "engine_"


class Direction(enum.Enum):
    """A classifier's direction as the gadget names it: seen from inside the container."""

    INGRESS = "ingress"
    EGRESS = "egress"

    @property
    def host_parent(self) -> int:
        """The clsact hook on the host-side veth that carries this direction."""
        return TC_H_CLSACT_EGRESS if self is Direction.INGRESS else TC_H_CLSACT_INGRESS


@attrs.frozen
class HostPeer:
    """A container interface and its veth peer in the host netns."""

    ifname: str
    ifindex: int
    host_ifname: str
    host_ifindex: int


@attrs.frozen
class TcFilter:
    """One filter of ours: enough to delete exactly it and nothing else."""

    host_ifindex: int
    host_ifname: str
    parent: int
    prio: int
    name: str


def filter_name(owner: str, program: str) -> str:
    return f"{NAME_PREFIX}{owner}_{program}"


def owner_of(name: str) -> str | None:
    if not name.startswith(NAME_PREFIX):
        return None
    owner, sep, _program = name[len(NAME_PREFIX) :].partition("_")
    return owner if sep else None


def _link_kind(link: Any) -> str | None:
    info = link.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


def _container_veths() -> list[tuple[str, int, int, int | None]]:
    """Runs inside the container netns: (name, index, peer index, peer's nsid) of each veth."""
    with IPRoute() as ipr:
        return [
            (
                link.get_attr("IFLA_IFNAME"),
                link["index"],
                link.get_attr("IFLA_LINK"),
                link.get_attr("IFLA_LINK_NETNSID"),
            )
            for link in ipr.get_links()
            if _link_kind(link) == "veth" and link.get_attr("IFLA_LINK") is not None
        ]


def _host_peers(veths: list[tuple[str, int, int, int | None]], nsid: int) -> list[HostPeer]:
    """Runs in the host netns: keep the veths whose peer is here and points back at them."""
    peers = []
    with IPRoute() as ipr:
        for ifname, ifindex, peer_index, _ in veths:
            try:
                (link,) = ipr.get_links(peer_index)
            except NetlinkError as exc:
                if exc.code == errno.ENODEV:
                    continue
                raise
            if (
                _link_kind(link) == "veth"
                and link.get_attr("IFLA_LINK") == ifindex
                and link.get_attr("IFLA_LINK_NETNSID") == nsid
            ):
                peers.append(HostPeer(ifname, ifindex, link.get_attr("IFLA_IFNAME"), peer_index))
    return peers


async def find_host_peers(handle: NetnsHandle, program: str) -> list[HostPeer]:
    """The host-side ends of every veth of the netns of `handle` (several interfaces: all).

    Raises AttachError when the netns is the host's (a container on the host network has no
    peer, and attaching to the host's own interfaces would trace everything) or has no veth.
    """
    netns = str(handle.id)
    if handle.id == host_netns_id():
        raise AttachError(
            program, "the container uses the host's network: it has no veth peer", netns=netns
        )
    nsids = NsidClient()
    try:
        # The peer's IFLA_LINK_NETNSID is the container netns's id in the host.
        nsid = await nsids.get(handle.fd)
        veths = await in_netns(handle, _container_veths)
        peers = await trio.to_thread.run_sync(_host_peers, veths, nsid)
    except (OSError, NetlinkError) as exc:
        code = exc.code if isinstance(exc, NetlinkError) else exc.errno
        raise AttachError(
            program, f"cannot list the interfaces: {exc}", netns=netns, errno=code
        ) from exc
    finally:
        nsids.close()
    if not peers:
        raise AttachError(program, "no veth interface with a peer in the host netns", netns=netns)
    return peers


def _ensure_clsact(ipr: Any, ifindex: int) -> None:
    if any(q.get_attr("TCA_KIND") == "clsact" for q in ipr.get_qdiscs(ifindex)):
        return
    try:
        ipr.tc("add", "clsact", ifindex)
    except NetlinkError as exc:
        if exc.code != errno.EEXIST:  # added by someone else in between
            raise


def _used_prios(ipr: Any, ifindex: int, parent: int) -> set[int]:
    return {f["info"] >> 16 for f in ipr.get_filters(ifindex, parent=parent)}


def _add_filter(prog_fd: int, peer: HostPeer, parent: int, name: str) -> TcFilter:
    """Add our filter at the lowest free priority of our range.

    Other engines (and other tools) add filters on the same hook at the same time: between
    listing and adding, the chosen priority may be taken. The kernel then answers EEXIST (a
    ``bpf`` filter with handle 1 is there: "add" never replaces) or EINVAL (a filter of another
    kind or protocol holds that priority); either way, list again and take the next free one.
    Bounded, so a hook that keeps changing under us is an error, not a loop.
    """
    with IPRoute() as ipr:
        _ensure_clsact(ipr, peer.host_ifindex)
        for _ in range(ADD_ATTEMPTS):
            used = _used_prios(ipr, peer.host_ifindex, parent)
            prio = next((p for p in range(PRIO_FIRST, PRIO_LAST + 1) if p not in used), None)
            if prio is None:
                raise NetlinkError(errno.ENOSPC, "no free tc priority in our range")
            try:
                ipr.tc(
                    "add-filter",
                    "bpf",
                    peer.host_ifindex,
                    FILTER_HANDLE,
                    parent=parent,
                    prio=prio,
                    protocol=ETH_P_ALL,
                    fd=prog_fd,
                    name=name,
                    direct_action=True,
                )
            except NetlinkError as exc:
                taken = exc.code == errno.EEXIST or (
                    exc.code == errno.EINVAL and prio in _used_prios(ipr, peer.host_ifindex, parent)
                )
                if taken:
                    logger.debug("tc priority %#x on %s taken meanwhile", prio, peer.host_ifname)
                    continue
                raise
            return TcFilter(peer.host_ifindex, peer.host_ifname, parent, prio, name)
    raise NetlinkError(errno.EBUSY, f"tc priorities kept being taken ({ADD_ATTEMPTS} tries)")


def _delete_filter(ipr: Any, ifindex: int, parent: int, prio: int, handle: int) -> bool:
    """False when it was gone already (interface deleted, filter removed by someone)."""
    try:
        ipr.tc("del-filter", "bpf", ifindex, handle, parent=parent, prio=prio, protocol=ETH_P_ALL)
    except NetlinkError as exc:
        if exc.code in (errno.ENOENT, errno.ENODEV, errno.EINVAL):
            return False
        raise
    return True


def _remove(f: TcFilter) -> None:
    with IPRoute() as ipr:
        _delete_filter(ipr, f.host_ifindex, f.parent, f.prio, FILTER_HANDLE)


@asynccontextmanager
async def attach_classifier(
    prog_fd: int,
    program: str,
    peer: HostPeer,
    direction: Direction,
    *,
    netns: str | None = None,
    owner: str | None = None,
) -> AsyncIterator[TcFilter]:
    """Attach a loaded SCHED_CLS program (direct-action) for one container interface.

    Always removes its filter on exit, also on cancellation.
    """
    name = filter_name(owner or current_owner(), program)
    try:
        tc_filter = await trio.to_thread.run_sync(
            _add_filter, prog_fd, peer, direction.host_parent, name, abandon_on_cancel=False
        )
    except NetlinkError as exc:
        raise AttachError(
            program,
            f"cannot add the tc filter: {exc}",
            netns=netns,
            interface=peer.host_ifname,
            errno=exc.code,
        ) from exc
    logger.debug("classifier %s attached: %s", program, tc_filter)
    try:
        yield tc_filter
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_remove, tc_filter)
        logger.debug("classifier %s detached: %s", program, tc_filter)


def _bpf_name(f: Any) -> str | None:
    options = f.get_attr("TCA_OPTIONS")
    name = options.get_attr("TCA_BPF_NAME") if options is not None else None
    return name if f.get_attr("TCA_KIND") == "bpf" and name else None


def _holds(ipr: Any, ifindex: int, parent: int, prio: int, name: str) -> bool:
    """Whether `name` is still the filter at `prio`: another engine's cleanup may have removed
    the orphan since we listed, and a live engine may have taken the freed priority."""
    try:
        filters = ipr.get_filters(ifindex, parent=parent)
    except NetlinkError:
        return False
    return any(f["info"] >> 16 == prio and _bpf_name(f) == name for f in filters)


def _remove_orphans(owner_alive: Callable[[str], bool]) -> int:
    removed = 0
    with IPRoute() as ipr:
        for link in ipr.get_links():
            for parent in (TC_H_CLSACT_INGRESS, TC_H_CLSACT_EGRESS):
                try:
                    filters = ipr.get_filters(link["index"], parent=parent)
                except NetlinkError as exc:
                    if exc.code in (errno.ENODEV, errno.EINVAL, errno.ENOENT):
                        continue  # link gone, or no clsact on it
                    raise
                for f in filters:
                    name = _bpf_name(f)
                    owner = owner_of(name) if name else None
                    if name is None or owner is None or owner_alive(owner):
                        continue
                    prio = f["info"] >> 16
                    if _holds(ipr, link["index"], parent, prio, name) and _delete_filter(
                        ipr, link["index"], parent, prio, f["handle"]
                    ):
                        logger.info(
                            "removed orphan filter %s on %s", name, link.get_attr("IFLA_IFNAME")
                        )
                        removed += 1
    return removed


async def remove_orphan_filters(owner_alive: Callable[[str], bool]) -> int:
    """Delete the filters of ours (named "engine_<owner>_...") whose owner is gone; leave all
    others. Returns how many were removed."""
    return await trio.to_thread.run_sync(_remove_orphans, owner_alive)
