"""Just enough rtnetlink for netns ids: RTM_NEWNSID/RTM_DELNSID events and RTM_GETNSID queries.

Written on raw sockets rather than pyroute2: events are read on the trio thread with
`wait_readable`, queries go through a thread of their own (``NsidClient``).
"""

from __future__ import annotations

import errno
import socket
import struct

import attrs
import trio

from engine.netns.netlink import (
    NETLINK_ADD_MEMBERSHIP,
    SOL_NETLINK,
    RtnlSocket,
    as_s32,
    enlarge_receive_buffer,
    iter_attrs,
    messages,
    pack_attr,
    rtnl_socket,
)
from engine.netns.worker import HostRtnl

RTNLGRP_NSID = 28

RTM_NEWNSID = 88
RTM_DELNSID = 89
RTM_GETNSID = 90

NETNSA_NSID = 1
NETNSA_FD = 3
NETNSA_NSID_NOT_ASSIGNED = -1

_RTGENMSG = b"\0" * 4  # struct rtgenmsg is one byte, padded to 4


@attrs.frozen
class NsidEvent:
    """A netns got (`added`) or lost its id in the reader's netns."""

    added: bool
    nsid: int


def open_event_socket() -> socket.socket:
    """A non-blocking rtnetlink socket subscribed to RTNLGRP_NSID, with room for bursts."""
    sock = rtnl_socket(blocking=False)
    try:
        sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, RTNLGRP_NSID)
        enlarge_receive_buffer(sock)
    except BaseException:
        sock.close()
        raise
    return sock


def nsid_of(payload: bytes) -> int | None:
    """The id an RTM_NEWNSID/RTM_DELNSID message (or a query's answer) carries."""
    for kind, value in iter_attrs(payload, len(_RTGENMSG)):
        if kind == NETNSA_NSID:
            return as_s32(value)
    return None


def parse_events(buf: bytes) -> list[NsidEvent]:
    events = []
    for message in messages(buf):
        if message.kind in (RTM_NEWNSID, RTM_DELNSID):
            nsid = nsid_of(message.payload)
            if nsid is not None:
                events.append(NsidEvent(added=message.kind == RTM_NEWNSID, nsid=nsid))
    return events


def _fd_attr(fd: int) -> bytes:
    return pack_attr(NETNSA_FD, struct.pack("=I", fd))


def _get(sock: RtnlSocket, fd: int) -> int:
    replies = sock.request(RTM_GETNSID, 0, _RTGENMSG + _fd_attr(fd), "nsid")
    nsid = nsid_of(replies[0].payload) if replies else None
    return NETNSA_NSID_NOT_ASSIGNED if nsid is None else nsid


def _assign(sock: RtnlSocket, fd: int) -> int:
    nsid = _get(sock, fd)
    if nsid != NETNSA_NSID_NOT_ASSIGNED:
        return nsid
    body = _RTGENMSG + _fd_attr(fd) + pack_attr(NETNSA_NSID, struct.pack("=i", -1))
    try:
        sock.request(RTM_NEWNSID, 0, body, "nsid")
    except OSError as exc:
        # Someone else assigned one in between: fine, read it back.
        if exc.errno != errno.EEXIST:
            raise
    return _get(sock, fd)


class NsidClient(trio.abc.AsyncResource):
    """Ask the kernel for (or assign) the id of a netns given by fd.

    On a thread of its own (engine/netns/worker.py): under churn these requests took up to
    3 ms each inside ``send()`` here, time the trio thread would spend waiting. The fd must
    stay open until the answer comes (a cancelled caller waits for it).
    """

    def __init__(self) -> None:
        self._rtnl = HostRtnl("nsids")

    async def get(self, fd: int) -> int:
        """The id of the netns behind `fd` in our netns, or -1 when it has none."""
        return await self._rtnl.call(_get, fd)

    async def assign(self, fd: int) -> int:
        """Make sure the netns behind `fd` has an id (so that its end comes as RTM_DELNSID)."""
        return await self._rtnl.call(_assign, fd)

    async def aclose(self) -> None:
        """Idempotent."""
        await self._rtnl.aclose()
