"""Just enough rtnetlink for netns ids: RTM_NEWNSID/RTM_DELNSID events and RTM_GETNSID queries.

Written on raw sockets rather than pyroute2 so that NetnsSource runs on the trio thread with
`wait_readable` (pyroute2's sync classes block and run their own event loop). RTM_GETNSID is
served without the RTNL lock, so asking from the trio thread does not wait on other processes.
"""

from __future__ import annotations

import errno
import socket
import struct

import attrs
import trio

from engine.netns.netlink import (
    NETLINK_ADD_MEMBERSHIP,
    NLM_F_ACK,
    NLMSG_ERROR,
    SOL_NETLINK,
    as_s32,
    enlarge_receive_buffer,
    error_code,
    iter_attrs,
    messages,
    pack_attr,
    pack_message,
    raise_for,
    rtnl_socket,
)

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


def _nsid_of(payload: bytes) -> int | None:
    for kind, value in iter_attrs(payload, len(_RTGENMSG)):
        if kind == NETNSA_NSID:
            return as_s32(value)
    return None


def parse_events(buf: bytes) -> list[NsidEvent]:
    events = []
    for message in messages(buf):
        if message.kind in (RTM_NEWNSID, RTM_DELNSID):
            nsid = _nsid_of(message.payload)
            if nsid is not None:
                events.append(NsidEvent(added=message.kind == RTM_NEWNSID, nsid=nsid))
    return events


def _fd_attr(fd: int) -> bytes:
    return pack_attr(NETNSA_FD, struct.pack("=I", fd))


class NsidClient:
    """Ask the kernel for (or assign) the id of a netns given by fd, from the trio thread.

    One request at a time (a lock): the kernel answers within ``send()``, so that the
    answer is waiting by the time the next request could be made.
    """

    def __init__(self) -> None:
        self._sock = rtnl_socket(blocking=False)
        self._seq = 0
        self._lock = trio.Lock()

    def close(self) -> None:
        """Idempotent (a socket closes once)."""
        self._sock.close()

    async def _exchange(self, kind: int, flags: int, body: bytes) -> int:
        """Send one request; return the NETNSA_NSID of the answer, or 0 for a bare ack."""
        async with self._lock:
            self._seq += 1
            seq = self._seq
            self._sock.send(pack_message(kind, flags, seq, _RTGENMSG + body))
            while True:
                try:
                    buf = self._sock.recv(65536)
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(self._sock)
                    continue
                for message in messages(buf):
                    if message.seq != seq:
                        continue
                    if message.kind == NLMSG_ERROR:
                        raise_for(error_code(message), "nsid")
                        return 0
                    nsid = _nsid_of(message.payload)
                    return NETNSA_NSID_NOT_ASSIGNED if nsid is None else nsid

    async def get(self, fd: int) -> int:
        """The id of the netns behind `fd` in our netns, or -1 when it has none."""
        return await self._exchange(RTM_GETNSID, 0, _fd_attr(fd))

    async def assign(self, fd: int) -> int:
        """Make sure the netns behind `fd` has an id (so that its end comes as RTM_DELNSID)."""
        nsid = await self.get(fd)
        if nsid != NETNSA_NSID_NOT_ASSIGNED:
            return nsid
        try:
            await self._exchange(
                RTM_NEWNSID,
                NLM_F_ACK,
                _fd_attr(fd) + pack_attr(NETNSA_NSID, struct.pack("=i", -1)),
            )
        except OSError as exc:
            # Someone else assigned one in between: fine, read it back.
            if exc.errno != errno.EEXIST:
                raise
        return await self.get(fd)
