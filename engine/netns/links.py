"""Interface changes in this netns, as they happen: rtnetlink's RTMGRP_LINK.

A container's netns is often seen before the runtime has moved its end of the veth pair into
it. The host-side end changes when that happens (it gets its peer's netns id), so waiting for
the next link change, instead of sleeping, lets classifiers attach the moment the veth is in.

The same messages say when a runtime creates a veth pair and puts one end on a bridge, before
it moves the other end into the container's netns: ``on_veth`` is told about each veth that
changes, so that classifiers can be attached to the host-side end ahead of time
(engine/preattach.py).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

import attrs
import trio
from pyroute2.netlink.rtnl import RTM_DELLINK, RTM_NEWLINK
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

logger = logging.getLogger(__name__)

RTMGRP_LINK = 0x1
# Link messages of the bridge family (AF_BRIDGE) repeat the port's state without IFLA_LINKINFO:
# only the generic ones say what kind of interface it is.
_AF_UNSPEC = 0


@attrs.frozen
class VethLink:
    """One end of a veth pair in this netns, as a link message described it."""

    ifindex: int
    ifname: str
    peer_ifindex: int  # 0: not known (the peer is in a netns that has no id here)
    peer_here: bool  # the peer is in this netns too (no IFLA_LINK_NETNSID)
    bridge_port: bool  # enslaved to a bridge (IFLA_INFO_SLAVE_KIND "bridge")
    deleted: bool


def _veth_link(msg: Any) -> VethLink | None:
    kind = msg["header"]["type"]
    if kind not in (RTM_NEWLINK, RTM_DELLINK) or msg["family"] != _AF_UNSPEC:
        return None
    info = msg.get_attr("IFLA_LINKINFO")
    if info is None or info.get_attr("IFLA_INFO_KIND") != "veth":
        return None
    return VethLink(
        ifindex=msg["index"],
        ifname=msg.get_attr("IFLA_IFNAME") or "",
        peer_ifindex=msg.get_attr("IFLA_LINK") or 0,
        peer_here=msg.get_attr("IFLA_LINK_NETNSID") is None,
        bridge_port=info.get_attr("IFLA_INFO_SLAVE_KIND") == "bridge",
        deleted=kind == RTM_DELLINK,
    )


class LinkWatcher:
    """Sets ``changed`` (then replaces it) whenever an interface of this netns changes, and
    calls ``on_veth`` (when set) with each veth a message describes, in order."""

    def __init__(self) -> None:
        self.changed = trio.Event()
        self.on_veth: Callable[[VethLink], None] | None = None
        self._marshal = MarshalRtnl()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Subscribed once started, until cancelled: the socket lives exactly as long as the
        task, so nothing is left open by a watcher that never ran."""
        with socket.socket(
            socket.AF_NETLINK,
            socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
            socket.NETLINK_ROUTE,
        ) as sock:
            sock.bind((0, RTMGRP_LINK))
            task_status.started()
            while True:
                await trio.lowlevel.wait_readable(sock)
                try:
                    while data := sock.recv(65536):
                        self._tell(data)
                except BlockingIOError:
                    pass
                except OSError as exc:
                    # ENOBUFS: changes were dropped; waking the waiters is all that matters
                    # (a veth missed here is attached the usual way, once it is moved).
                    logger.debug("link messages lost: %s", exc)
                changed, self.changed = self.changed, trio.Event()
                changed.set()

    def _tell(self, data: bytes) -> None:
        on_veth = self.on_veth
        if on_veth is None:
            return
        for msg in self._marshal.parse(data):
            veth = _veth_link(msg)
            if veth is not None:
                on_veth(veth)
