"""Just enough rtnetlink for netns ids: RTM_NEWNSID/RTM_DELNSID events and RTM_GETNSID queries.

Written on raw sockets rather than pyroute2: events are read on the trio thread with
`wait_readable`, and queries are made there too (``NsidClient``: answered at once).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Callable

import attrs
import trio

from engine.netns.netlink import (
    NETLINK_ADD_MEMBERSHIP,
    NLM_F_ECHO,
    SOL_NETLINK,
    Message,
    RtnlSocket,
    as_s32,
    enlarge_receive_buffer,
    iter_attrs,
    messages,
    pack_attr,
    rtnl_socket,
)

RTNLGRP_NSID = 28
# Requests per datagram: the replies to one datagram wait together in the socket's receive
# buffer, and a netns scan can find hundreds of new netns at once (the engine's start-up).
NSID_BATCH = 64

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


def _get_all(sock: RtnlSocket, fds: list[int]) -> list[int | OSError]:
    """The id of each netns (-1: none), in one datagram."""
    answers = sock.batch(*((RTM_GETNSID, 0, _RTGENMSG + _fd_attr(fd)) for fd in fds))
    return [_answered(code, replies) for code, replies in answers]


def _answered(code: int, replies: list[Message]) -> int | OSError:
    if code != 0:
        return OSError(code, f"nsid: {os.strerror(code)}")
    nsid = next((nsid_of(m.payload) for m in replies if m.kind == RTM_NEWNSID), None)
    return NETNSA_NSID_NOT_ASSIGNED if nsid is None else nsid


def _assign_all(sock: RtnlSocket, fds: list[int]) -> list[int | OSError]:
    """Give each netns an id where it has none, and say each one's id: one datagram of
    RTM_NEWNSID (the kernel echoes the id it gave), a second one of queries for those that
    had one already (EEXIST) or whose answer did not say."""
    auto = pack_attr(NETNSA_NSID, struct.pack("=i", -1))
    answers = sock.batch(
        *((RTM_NEWNSID, NLM_F_ECHO, _RTGENMSG + _fd_attr(fd) + auto) for fd in fds)
    )
    out: list[int | OSError] = []
    ask: list[int] = []
    for i, (code, replies) in enumerate(answers):
        got = _answered(code, replies)
        if code == errno.EEXIST or got == NETNSA_NSID_NOT_ASSIGNED:
            ask.append(i)
        out.append(got)
    for i, nsid in zip(ask, _get_all(sock, [fds[i] for i in ask]) if ask else [], strict=True):
        out[i] = nsid
    return out


def _get_one(sock: RtnlSocket, fd: int) -> int:
    (nsid,) = _get_all(sock, [fd])
    if isinstance(nsid, OSError):
        raise nsid
    return nsid


def _in_batches(
    do: Callable[[RtnlSocket, list[int]], list[int | OSError]], sock: RtnlSocket, fds: list[int]
) -> list[int | OSError]:
    out: list[int | OSError] = []
    for start in range(0, len(fds), NSID_BATCH):
        out += do(sock, fds[start : start + NSID_BATCH])
    return out


class NsidClient(trio.abc.AsyncResource):
    """Ask the kernel for (or assign) the id of a netns given by fd.

    On the calling (trio) thread: the kernel answers these requests without the RTNL lock,
    as it reads them (~10 us each here, 80 us p50 under churn), while a round trip to a thread
    of our own cost milliseconds once the CPUs were busy (two wake-ups to wait for, each
    behind everyone else's). Many at once go in datagrams of ``NSID_BATCH``. The kernel
    handles a netlink request inside ``send()``, so its answers are there when we read; the
    socket is non-blocking, so that a missing answer is an error at once, never a wait on
    the trio thread.
    """

    def __init__(self) -> None:
        self._sock: RtnlSocket | None = None

    def _socket(self) -> RtnlSocket:
        if self._sock is None:
            self._sock = RtnlSocket()
            self._sock.sock.setblocking(False)
        return self._sock

    async def get(self, fd: int) -> int:
        """The id of the netns behind `fd` in our netns, or -1 when it has none."""
        await trio.lowlevel.checkpoint()
        return _get_one(self._socket(), fd)

    async def get_all(self, fds: list[int]) -> list[int | OSError]:
        """``get`` for each fd, in one datagram (an error for one is its entry)."""
        await trio.lowlevel.checkpoint()
        return _in_batches(_get_all, self._socket(), fds)

    async def assign_all(self, fds: list[int]) -> list[int | OSError]:
        """Make sure the netns behind each fd has an id (so that its end comes as
        RTM_DELNSID), in one datagram; each one's id (or error)."""
        await trio.lowlevel.checkpoint()
        return _in_batches(_assign_all, self._socket(), fds)

    async def aclose(self) -> None:
        """Idempotent."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        await trio.lowlevel.checkpoint()
