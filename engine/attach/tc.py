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

The netlink work is the engine's own (engine/attach/tcmsg.py): on the host rtnetlink worker
when one is given (the engine's, engine/netns/worker.py), else on a worker made for the call.
Host-side peers come from the host's own link table (engine/netns/links.py): a host veth whose
IFLA_LINK_NETNSID is the container netns's id in the host is its peer; nothing enters the
container's netns to find them.
"""

from __future__ import annotations

import enum
import errno
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

import attrs
import trio

from engine.attach.owner import current_owner
from engine.attach.tcmsg import (
    FilterInfo,
    add_bpf_filter,
    bpf_filter_request,
    check_clsact,
    clsact_request,
    delete_bpf_filter,
    delete_filter_request,
    list_filters,
)
from engine.errors import AttachError
from engine.netns import LinkWatcher, NetnsHandle, NsidClient, host_netns_id
from engine.netns.links import VethLink, dump_links, dump_veths
from engine.netns.netlink import RtnlSocket
from engine.netns.worker import HostRtnl

logger = logging.getLogger(__name__)

TC_H_CLSACT_INGRESS = 0xFFFFFFF2
TC_H_CLSACT_EGRESS = 0xFFFFFFF3
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
    """A container's veth: its index in the container's netns, and its peer in the host's."""

    ifindex: int
    host_ifname: str
    host_ifindex: int

    @classmethod
    def of(cls, veth: VethLink) -> HostPeer:
        return cls(veth.peer_ifindex, veth.ifname, veth.ifindex)


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


async def find_host_peers(
    handle: NetnsHandle,
    program: str,
    *,
    links: LinkWatcher | None = None,
    nsids: NsidClient | None = None,
    nsid: int | None = None,
) -> list[HostPeer]:
    """The host-side ends of every veth of the netns of `handle` (several interfaces: all),
    from ``links`` (the engine's table) or else from a dump of the host's links; ``nsid``,
    the netns's id in the host when the caller knows it, saves asking for it.

    Raises AttachError when the netns is the host's (a container on the host network has no
    peer, and attaching to the host's own interfaces would trace everything) or has no veth.
    """
    netns = str(handle.id)
    if handle.id == host_netns_id():
        raise AttachError(
            program, "the container uses the host's network: it has no veth peer", netns=netns
        )
    client = nsids or NsidClient()
    try:
        # Without an id in the host, no veth of the netns can have its peer here.
        if nsid is None:
            nsid = await client.get(handle.fd)
        if links is not None:
            veths = links.peers_of(nsid)
        else:
            async with HostRtnl() as rtnl:
                veths = [v for v in await rtnl.call(dump_veths) if v.peer_nsid == nsid]
    except OSError as exc:
        raise AttachError.from_os(program, "cannot list the interfaces", exc, netns=netns) from exc
    finally:
        if nsids is None:
            await client.aclose()
    if nsid < 0 or not veths:
        raise AttachError(program, "no veth interface with a peer in the host netns", netns=netns)
    return [HostPeer.of(v) for v in veths]


def _used_prios(sock: RtnlSocket, ifindex: int, parent: int) -> set[int]:
    return {f.prio for f in list_filters(sock, ifindex, parent)}


@attrs.frozen
class Classifier:
    """One program to attach on a veth's host side."""

    prog_fd: int
    program: str
    direction: Direction


def _add_filters(
    sock: RtnlSocket, peer: HostPeer, wanted: list[tuple[int, int, str]], clsact_there: bool
) -> list[TcFilter | OSError]:
    """Add each (program fd, parent, name) filter at the lowest free priority of our range;
    for each, its filter or why it could not be added. The clsact qdisc first, unless
    ``clsact_there`` says the caller knows it is there.

    The usual case, a veth that nobody else filters: the qdisc and every filter at the first
    priority of our range, in one datagram. Each request waits on the RTNL lock, which netns
    teardown holds for milliseconds at a time: one round trip per veth, not one per program
    (nor a listing first), and no request whose answer is known.
    """
    ifindex = peer.host_ifindex
    qdisc = [] if clsact_there else [clsact_request(ifindex)]
    answers = sock.batch(
        *qdisc,
        *(
            bpf_filter_request(ifindex, parent, PRIO_FIRST, FILTER_HANDLE, fd, name)
            for fd, parent, name in wanted
        ),
    )
    if qdisc:
        check_clsact(answers.pop(0)[0])
    out: list[TcFilter | OSError] = []
    for (fd, parent, name), (code, _) in zip(wanted, answers, strict=True):
        if code == 0:
            out.append(TcFilter(ifindex, peer.host_ifname, parent, PRIO_FIRST, name))
        elif code in (errno.EEXIST, errno.EINVAL):
            try:
                out.append(_add_at_free_prio(sock, fd, peer, parent, name))
            except OSError as exc:
                out.append(exc)
        else:
            out.append(
                OSError(code, f"cannot add the tc filter: {errno.errorcode.get(code, code)}")
            )
    return out


def _add_at_free_prio(
    sock: RtnlSocket, prog_fd: int, peer: HostPeer, parent: int, name: str
) -> TcFilter:
    """The first priority was taken: list the hook and take the next free one.

    Other engines (and other tools) add filters on the same hook at the same time: between
    listing and adding, the chosen priority may be taken. The kernel then answers EEXIST (a
    ``bpf`` filter with handle 1 is there: "add" never replaces) or EINVAL (a filter of another
    kind or protocol holds that priority); either way, list again and take the next free one.
    Bounded, so a hook that keeps changing under us is an error, not a loop.
    """
    ifindex = peer.host_ifindex
    for _ in range(ADD_ATTEMPTS):
        used = _used_prios(sock, ifindex, parent)
        prio = next((p for p in range(PRIO_FIRST, PRIO_LAST + 1) if p not in used), None)
        if prio is None:
            raise OSError(errno.ENOSPC, "no free tc priority in our range")
        try:
            add_bpf_filter(sock, ifindex, parent, prio, FILTER_HANDLE, prog_fd, name)
        except OSError as exc:
            taken = exc.errno == errno.EEXIST or (
                exc.errno == errno.EINVAL and prio in _used_prios(sock, ifindex, parent)
            )
            if taken:
                logger.debug("tc priority %#x on %s taken meanwhile", prio, peer.host_ifname)
                continue
            raise
        return TcFilter(ifindex, peer.host_ifname, parent, prio, name)
    raise OSError(errno.EBUSY, f"tc priorities kept being taken ({ADD_ATTEMPTS} tries)")


# What deleting a filter says when it is gone already (its interface deleted, or someone
# removed it): no error.
_GONE = frozenset({errno.ENOENT, errno.ENODEV, errno.EINVAL})


def _delete_filter(sock: RtnlSocket, ifindex: int, parent: int, prio: int, handle: int) -> bool:
    """False when it was gone already (interface deleted, filter removed by someone)."""
    try:
        delete_bpf_filter(sock, ifindex, parent, prio, handle)
    except OSError as exc:
        if exc.errno in _GONE:
            return False
        raise
    return True


def _remove_all(sock: RtnlSocket, filters: list[TcFilter]) -> None:
    """Delete the filters in one datagram; those gone already (interface deleted, filter
    removed by someone) are no error."""
    answers = sock.batch(
        *(delete_filter_request(f.host_ifindex, f.parent, f.prio, FILTER_HANDLE) for f in filters)
    )
    for f, (code, _) in zip(filters, answers, strict=True):
        if code != 0 and code not in _GONE:
            logger.warning("cannot remove tc filter %s: %s", f, os.strerror(code))


@asynccontextmanager
async def attach_classifiers(
    classifiers: list[Classifier],
    peer: HostPeer,
    *,
    netns: str | None = None,
    owner: str | None = None,
    rtnl: HostRtnl | None = None,
    detach_rtnl: HostRtnl | None = None,
    still_there: Callable[[TcFilter], bool] | None = None,
    clsact_there: bool = False,
) -> AsyncIterator[list[TcFilter | AttachError]]:
    """Attach loaded SCHED_CLS programs (direct-action) for one container interface, in one
    request through ``rtnl`` (else a worker of its own); for each, its filter or its error.
    ``clsact_there``: the caller has filters on that veth already, so its qdisc is not asked
    for.

    Always removes the filters on exit, also on cancellation, through ``detach_rtnl`` (else
    ``rtnl``): removals never queue in front of attaches. A filter whose veth is gone
    (``still_there`` says False: it went with it) is not asked for again.
    """
    who = owner or current_owner()
    wanted = [
        (c.prog_fd, c.direction.host_parent, filter_name(who, c.program)) for c in classifiers
    ]
    async with _rtnl(rtnl) as worker:
        try:
            # A cancelled caller waits for the answer: the filters are then removed below.
            added = await worker.call(_add_filters, peer, wanted, clsact_there)
        except OSError as exc:
            added = [exc] * len(classifiers)
        results: list[TcFilter | AttachError] = [
            AttachError.from_os(
                c.program, "cannot add the tc filter", r, netns=netns, interface=peer.host_ifname
            )
            if isinstance(r, OSError)
            else r
            for c, r in zip(classifiers, added, strict=True)
        ]
        ours = [r for r in results if isinstance(r, TcFilter)]
        logger.debug("classifiers attached: %s", ours)
        try:
            yield results
        finally:
            left = [f for f in ours if still_there is None or still_there(f)]
            if left:
                with trio.CancelScope(shield=True):
                    await (detach_rtnl or worker).call(_remove_all, left)
            logger.debug("classifiers detached: %s", ours)


@asynccontextmanager
async def attach_classifier(
    prog_fd: int,
    program: str,
    peer: HostPeer,
    direction: Direction,
    *,
    netns: str | None = None,
    owner: str | None = None,
    rtnl: HostRtnl | None = None,
    clsact_there: bool = False,
) -> AsyncIterator[TcFilter]:
    """One classifier (``attach_classifiers``); AttachError when it cannot be added."""
    async with attach_classifiers(
        [Classifier(prog_fd, program, direction)],
        peer,
        netns=netns,
        owner=owner,
        rtnl=rtnl,
        clsact_there=clsact_there,
    ) as (result,):
        if isinstance(result, AttachError):
            raise result
        yield result


@asynccontextmanager
async def _rtnl(given: HostRtnl | None) -> AsyncIterator[HostRtnl]:
    """``given``, or a worker of its own for as long as the block runs."""
    if given is not None:
        yield given
        return
    async with HostRtnl() as own:
        yield own


def _ours(filters: list[FilterInfo]) -> Iterator[tuple[FilterInfo, str, str]]:
    for f in filters:
        owner = owner_of(f.bpf_name) if f.kind == "bpf" and f.bpf_name else None
        if owner is not None and f.bpf_name is not None:
            yield f, f.bpf_name, owner


def _holds(sock: RtnlSocket, ifindex: int, parent: int, prio: int, name: str) -> bool:
    """Whether `name` is still the filter at `prio`: another engine's cleanup may have removed
    the orphan since we listed, and a live engine may have taken the freed priority."""
    try:
        filters = list_filters(sock, ifindex, parent)
    except OSError:
        return False
    return any(f.prio == prio and f.bpf_name == name for f in filters)


def _remove_orphans(sock: RtnlSocket, owner_alive: Callable[[str], bool]) -> int:
    removed = 0
    for ifindex, ifname in dump_links(sock):
        for parent in (TC_H_CLSACT_INGRESS, TC_H_CLSACT_EGRESS):
            try:
                filters = list_filters(sock, ifindex, parent)
            except OSError as exc:
                if exc.errno in (errno.ENODEV, errno.EINVAL, errno.ENOENT):
                    continue  # link gone, or no clsact on it
                raise
            for f, name, owner in _ours(filters):
                if owner_alive(owner):
                    continue
                if _holds(sock, ifindex, parent, f.prio, name) and _delete_filter(
                    sock, ifindex, parent, f.prio, f.handle
                ):
                    logger.info("removed orphan filter %s on %s", name, ifname)
                    removed += 1
    return removed


async def remove_orphan_filters(
    owner_alive: Callable[[str], bool], *, rtnl: HostRtnl | None = None
) -> int:
    """Delete the filters of ours (named "engine_<owner>_...") whose owner is gone; leave all
    others. Returns how many were removed."""
    async with _rtnl(rtnl) as worker:
        return await worker.call(_remove_orphans, owner_alive)
