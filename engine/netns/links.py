"""The host's veths, kept up to date from rtnetlink's RTMGRP_LINK: a link table of our own.

A host-side veth whose peer is in a container's netns carries that netns's id in the host
(IFLA_LINK_NETNSID): so a netns's host-side peers are looked up here by nsid (``peers_of``),
without entering the netns or asking the kernel for every link each time. The table is
dumped once at start, then follows every link message (dumped again if messages were lost).

A container's netns is often seen before the runtime has moved its end of the veth pair into
it; the host-side end changes when that happens, so waiting on ``changed`` (set, then replaced,
after each batch of messages) lets classifiers attach the moment the veth is in. The same
messages say when a runtime creates a veth pair and puts one end on a bridge, before it moves
the other end into the container's netns: ``on_veth`` is told about each veth that changes,
so that classifiers can be attached to the host-side end ahead of time (engine/preattach.py).

Ids are reused at once: a netns being destroyed loses its id (RTM_DELNSID) before its veths
are deleted, and the next new netns is given that id while the old host-side veth, about to
go, still says it. So the table follows RTNLGRP_NSID on the same socket (one queue: the
removal of an id comes before any link message that names it anew) and forgets an id's peers
when the id goes; and ``peers_of`` reads every message waiting before it answers, since the
task asking may run before the watcher's own has read them.
"""

from __future__ import annotations

import ctypes
import logging
import socket
import struct
from collections.abc import Callable

import attrs
import trio

from engine.netns.netlink import (
    NETLINK_ADD_MEMBERSHIP,
    SOL_NETLINK,
    RtnlSocket,
    as_s32,
    as_str,
    as_u32,
    attr_map,
    enlarge_receive_buffer,
    messages,
    rtnl_socket,
)
from engine.netns.rtnl import NETNSA_NSID_NOT_ASSIGNED, RTM_DELNSID, RTNLGRP_NSID, nsid_of

logger = logging.getLogger(__name__)


RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTMGRP_LINK = 0x1
IFLA_IFNAME, IFLA_LINK, IFLA_LINKINFO, IFLA_LINK_NETNSID = 3, 5, 18, 37
IFLA_INFO_KIND, IFLA_INFO_SLAVE_KIND = 1, 4
_IFINFO = struct.Struct("=BxHiII")
# Link messages of the bridge family (AF_BRIDGE) repeat the port's state without IFLA_LINKINFO:
# only the generic ones say what kind of interface it is.
_AF_UNSPEC = 0
SO_ATTACH_FILTER = 26
# A classic BPF filter on the watcher's socket: the kernel drops the bridge family's messages
# before they wake the engine (8 of the 17 link messages a container's veth brings, measured
# under churn). Every message it gets has its family in the byte after the netlink header.
_AF_BRIDGE = 7
_DROP_BRIDGE_FAMILY = (
    (0x30, 0, 0, 16),  # ldb [16]: ifi_family (link), rtgen_family (nsid)
    (0x15, 0, 1, _AF_BRIDGE),  # jeq: drop, else accept
    (0x06, 0, 0, 0),
    (0x06, 0, 0, 0xFFFFFFFF),
)


@attrs.frozen
class VethLink:
    """One end of a veth pair in this netns, as a link message described it."""

    ifindex: int
    ifname: str
    peer_ifindex: int  # 0: not known (the peer is in a netns that has no id here)
    peer_nsid: int | None  # the netns of the peer, by its id here; None: this netns
    bridge_port: bool  # enslaved to a bridge (IFLA_INFO_SLAVE_KIND "bridge")
    deleted: bool

    @property
    def peer_here(self) -> bool:
        return self.peer_nsid is None


def veth_link(kind: int, payload: bytes) -> VethLink | None:
    """The veth a link message describes, or None for other messages and interfaces."""
    if kind not in (RTM_NEWLINK, RTM_DELLINK) or len(payload) < _IFINFO.size:
        return None
    family, _type, index, _flags, _change = _IFINFO.unpack_from(payload)
    if family != _AF_UNSPEC:
        return None
    top = attr_map(payload, _IFINFO.size)
    info = attr_map(top.get(IFLA_LINKINFO, b""))
    if as_str(info.get(IFLA_INFO_KIND)) != "veth":
        return None
    return VethLink(
        ifindex=index,
        ifname=as_str(top.get(IFLA_IFNAME)) or "",
        peer_ifindex=as_u32(top.get(IFLA_LINK)) or 0,
        peer_nsid=as_s32(top.get(IFLA_LINK_NETNSID)),
        bridge_port=as_str(info.get(IFLA_INFO_SLAVE_KIND)) == "bridge",
        deleted=kind == RTM_DELLINK,
    )


def dump_links(sock: RtnlSocket) -> list[tuple[int, str]]:
    """(index, name) of every interface of this netns now (blocking)."""
    out = []
    for m in sock.dump(RTM_GETLINK, _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0), "links"):
        if m.kind == RTM_NEWLINK and len(m.payload) >= _IFINFO.size:
            name = as_str(attr_map(m.payload, _IFINFO.size).get(IFLA_IFNAME)) or ""
            out.append((_IFINFO.unpack_from(m.payload)[2], name))
    return out


def dump_veths(sock: RtnlSocket) -> list[VethLink]:
    """Every veth of this netns now (blocking)."""
    request = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    found = (veth_link(m.kind, m.payload) for m in sock.dump(RTM_GETLINK, request, "links"))
    return [v for v in found if v is not None]


def drop_bridge_family(sock: socket.socket) -> None:
    """Have the kernel drop the AF_BRIDGE messages ``sock`` would get (never read here)."""
    code = b"".join(struct.pack("=HBBI", *insn) for insn in _DROP_BRIDGE_FAMILY)
    program = ctypes.create_string_buffer(code, len(code))
    # struct sock_fprog: the length, then a pointer to the instructions (copied by the kernel).
    sock.setsockopt(
        socket.SOL_SOCKET,
        SO_ATTACH_FILTER,
        struct.pack("@HP", len(_DROP_BRIDGE_FAMILY), ctypes.addressof(program)),
    )


def _dump_now() -> list[VethLink]:
    sock = RtnlSocket()
    try:
        return dump_veths(sock)
    finally:
        sock.close()


class LinkWatcher:
    """The host's veths (``peers_of``), ``changed`` after each batch of link messages, and
    ``on_veth`` (when set) told of each veth a message describes, in order."""

    def __init__(self) -> None:
        self.changed = trio.Event()
        self.on_veth: Callable[[VethLink], None] | None = None
        self._veths: dict[int, VethLink] = {}
        self._by_nsid: dict[int, dict[int, VethLink]] = {}
        self._sock: socket.socket | None = None
        self._lost = False  # messages were dropped: the run loop fills the table again
        self._waiting = trio.CancelScope()

    def has(self, ifindex: int, ifname: str) -> bool:
        """Whether the veth ``ifname`` is still there (under that index), as of every message
        the kernel has sent so far: a removal is not asked for when its answer is known."""
        self._read_waiting()
        veth = self._veths.get(ifindex)
        return veth is not None and veth.ifname == ifname

    def peers_of(self, nsid: int) -> list[VethLink]:
        """The host-side veths whose peer is in the netns of id ``nsid``, as of every message
        the kernel has sent so far."""
        self._read_waiting()
        return list(self._by_nsid.get(nsid, {}).values())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Subscribed and the table filled once started, until cancelled: the socket lives
        exactly as long as the task, so nothing is left open by a watcher that never ran."""
        with rtnl_socket(blocking=False, groups=RTMGRP_LINK) as sock:
            sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, RTNLGRP_NSID)
            enlarge_receive_buffer(sock)
            drop_bridge_family(sock)
            # Subscribed first: what changes during the dump comes after it, and wins.
            await self._refill()
            self._sock = sock
            task_status.started()
            try:
                while True:
                    # Cancelled when ``peers_of`` found messages lost: nothing may be waiting.
                    with trio.CancelScope() as self._waiting:
                        await trio.lowlevel.wait_readable(sock)
                    self._read_waiting()
                    if self._lost:
                        await self._refill()
            finally:
                self._sock = None

    def _read_waiting(self) -> None:
        """Take in every message waiting (none before ``run`` has started)."""
        sock = self._sock
        if sock is None:
            return
        took = False
        try:
            while data := sock.recv(1 << 16):
                took |= self._take(data)
        except BlockingIOError:
            pass
        except OSError as exc:
            # ENOBUFS: changes were dropped; the table is made again (by ``run``).
            logger.debug("link messages lost: %s", exc)
            self._lost = True
            self._waiting.cancel()
        if took:
            changed, self.changed = self.changed, trio.Event()
            changed.set()

    async def _refill(self) -> None:
        self._lost = False
        veths = await trio.to_thread.run_sync(_dump_now)
        self._veths.clear()
        self._by_nsid.clear()
        for veth in veths:
            self._note(veth)
        changed, self.changed = self.changed, trio.Event()
        changed.set()

    def _take(self, data: bytes) -> bool:
        """Whether the messages changed the table (waiters look again only then)."""
        on_veth = self.on_veth
        changed = False
        for message in messages(data):
            if message.kind == RTM_DELNSID:
                self._nsid_gone(message.payload)
                changed = True
                continue
            veth = veth_link(message.kind, message.payload)
            if veth is None:
                continue
            changed = True
            self._note(veth)
            if on_veth is not None:
                on_veth(veth)
        return changed

    def _nsid_gone(self, payload: bytes) -> None:
        """The veths whose peer had this id are no netns's peers any more (they are going)."""
        nsid = nsid_of(payload)
        for veth in self._by_nsid.pop(nsid, {}).values() if nsid is not None else ():
            self._veths[veth.ifindex] = attrs.evolve(veth, peer_nsid=NETNSA_NSID_NOT_ASSIGNED)

    def _note(self, veth: VethLink) -> None:
        old = self._veths.pop(veth.ifindex, None)
        if old is not None and old.peer_nsid is not None:
            peers = self._by_nsid.get(old.peer_nsid, {})
            peers.pop(old.ifindex, None)
            if not peers:
                self._by_nsid.pop(old.peer_nsid, None)
        if veth.deleted:
            return
        self._veths[veth.ifindex] = veth
        if veth.peer_nsid is not None and veth.peer_nsid >= 0:
            self._by_nsid.setdefault(veth.peer_nsid, {})[veth.ifindex] = veth
