"""Just enough rtnetlink for netns ids: RTM_NEWNSID/RTM_DELNSID events and RTM_GETNSID queries.

Written on raw sockets rather than pyroute2 so that NetnsSource runs on the trio thread with
`wait_readable` (pyroute2's sync classes block and run their own event loop).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator

import attrs
import trio

SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
RTNLGRP_NSID = 28

RTM_NEWNSID = 88
RTM_DELNSID = 89
RTM_GETNSID = 90
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4

NETNSA_NSID = 1
NETNSA_FD = 3
NETNSA_NSID_NOT_ASSIGNED = -1

_NLMSGHDR = struct.Struct("=IHHII")
_NLATTR = struct.Struct("=HH")
_RTGENMSG_LEN = 4  # struct rtgenmsg is one byte, padded to 4


def _align(n: int) -> int:
    return (n + 3) & ~3


@attrs.frozen
class NsidEvent:
    """A netns got (`added`) or lost its id in the reader's netns."""

    added: bool
    nsid: int


def open_event_socket() -> socket.socket:
    """A non-blocking rtnetlink socket subscribed to RTNLGRP_NSID."""
    sock = socket.socket(
        socket.AF_NETLINK,
        socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
        socket.NETLINK_ROUTE,
    )
    try:
        sock.bind((0, 0))
        sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, RTNLGRP_NSID)
    except BaseException:
        sock.close()
        raise
    return sock


def _attrs(buf: bytes, offset: int, end: int) -> Iterator[tuple[int, bytes]]:
    while offset + _NLATTR.size <= end:
        length, kind = _NLATTR.unpack_from(buf, offset)
        if length < _NLATTR.size:
            return
        yield kind & 0x3FFF, buf[offset + _NLATTR.size : offset + length]
        offset += _align(length)


def _messages(buf: bytes) -> Iterator[tuple[int, int, int, int]]:
    """(type, seq, start of payload, end of message) for each message in a datagram."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(buf):
        length, kind, _flags, seq, _pid = _NLMSGHDR.unpack_from(buf, offset)
        if length < _NLMSGHDR.size:
            return
        yield kind, seq, offset + _NLMSGHDR.size, offset + length
        offset += _align(length)


def _nsid_of(buf: bytes, start: int, end: int) -> int | None:
    for kind, value in _attrs(buf, start + _RTGENMSG_LEN, end):
        if kind == NETNSA_NSID:
            nsid: int = struct.unpack("=i", value[:4])[0]
            return nsid
    return None


def parse_events(buf: bytes) -> list[NsidEvent]:
    events = []
    for kind, _seq, start, end in _messages(buf):
        if kind in (RTM_NEWNSID, RTM_DELNSID):
            nsid = _nsid_of(buf, start, end)
            if nsid is not None:
                events.append(NsidEvent(added=kind == RTM_NEWNSID, nsid=nsid))
    return events


def _request(kind: int, flags: int, seq: int, attributes: list[tuple[int, bytes]]) -> bytes:
    body = b"\0" * _RTGENMSG_LEN
    for akind, value in attributes:
        attr = _NLATTR.pack(_NLATTR.size + len(value), akind) + value
        body += attr + b"\0" * (_align(len(attr)) - len(attr))
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, NLM_F_REQUEST | flags, seq, 0) + body


class NsidClient:
    """Ask the kernel for (or assign) the id of a netns given by fd, from the trio thread."""

    def __init__(self) -> None:
        self._sock = socket.socket(
            socket.AF_NETLINK,
            socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
            socket.NETLINK_ROUTE,
        )
        try:
            self._sock.bind((0, 0))
        except BaseException:
            self._sock.close()
            raise
        self._seq = 0

    def close(self) -> None:
        """Idempotent (a socket closes once)."""
        self._sock.close()

    async def _exchange(self, kind: int, flags: int, attributes: list[tuple[int, bytes]]) -> int:
        """Send one request; return the NETNSA_NSID of the answer, or 0 for a bare ack."""
        self._seq += 1
        seq = self._seq
        self._sock.send(_request(kind, flags, seq, attributes))
        while True:
            await trio.lowlevel.wait_readable(self._sock)
            buf = self._sock.recv(65536)
            for mkind, mseq, start, end in _messages(buf):
                if mseq != seq:
                    continue
                if mkind == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", buf, start)[0]
                    if code:
                        raise OSError(code, os.strerror(code))
                    return 0
                nsid = _nsid_of(buf, start, end)
                return NETNSA_NSID_NOT_ASSIGNED if nsid is None else nsid

    async def get(self, fd: int) -> int:
        """The id of the netns behind `fd` in our netns, or -1 when it has none."""
        return await self._exchange(RTM_GETNSID, 0, [(NETNSA_FD, struct.pack("=I", fd))])

    async def assign(self, fd: int) -> int:
        """Make sure the netns behind `fd` has an id (so that its end comes as RTM_DELNSID)."""
        nsid = await self.get(fd)
        if nsid != NETNSA_NSID_NOT_ASSIGNED:
            return nsid
        try:
            await self._exchange(
                RTM_NEWNSID,
                NLM_F_ACK,
                [(NETNSA_FD, struct.pack("=I", fd)), (NETNSA_NSID, struct.pack("=i", -1))],
            )
        except OSError as exc:
            # Someone else assigned one in between: fine, read it back.
            if exc.errno != errno.EEXIST:
                raise
        return await self.get(fd)
