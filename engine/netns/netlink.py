"""Netlink framing: messages and attributes packed with struct, and a blocking rtnetlink socket.

The engine speaks just enough rtnetlink itself (nsids, links, tc qdiscs and filters) instead
of opening a pyroute2 ``IPRoute`` (with an event loop of its own) per operation. A request is
handled by the kernel inside ``send()``, waiting for the RTNL lock when another process holds
it (netns teardown holds it for milliseconds): so requests that need that lock run on a
thread of their own (``engine.netns.worker.HostRtnl``), never on the trio thread.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator

import attrs

NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_ECHO, NLM_F_DUMP = 0x1, 0x2, 0x4, 0x8, 0x300
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400
NLA_F_NESTED = 0x8000
SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, SO_RCVBUFFORCE = 270, 1, 33

HEADER = struct.Struct("=IHHII")
_NLATTR = struct.Struct("=HH")
# Room for bursts of events (a thousand netns going at once) before the kernel drops them.
EVENT_BUFFER = 8 << 20


def align(n: int) -> int:
    return (n + 3) & ~3


def pack_attr(kind: int, value: bytes) -> bytes:
    raw = _NLATTR.pack(_NLATTR.size + len(value), kind) + value
    return raw + b"\0" * (align(len(raw)) - len(raw))


def pack_str(kind: int, value: str) -> bytes:
    return pack_attr(kind, value.encode() + b"\0")


def pack_u32(kind: int, value: int) -> bytes:
    return pack_attr(kind, struct.pack("=I", value))


def iter_attrs(buf: bytes, offset: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes]]:
    """(type without the nested/byte-order flags, value) of each attribute in buf[offset:end]."""
    end = len(buf) if end is None else end
    while offset + _NLATTR.size <= end:
        length, kind = _NLATTR.unpack_from(buf, offset)
        if length < _NLATTR.size:
            return
        yield kind & 0x3FFF, buf[offset + _NLATTR.size : offset + length]
        offset += align(length)


def attr_map(buf: bytes, offset: int = 0) -> dict[int, bytes]:
    return dict(iter_attrs(buf, offset))


def as_str(value: bytes | None) -> str | None:
    return None if value is None else value.split(b"\0", 1)[0].decode(errors="replace")


def as_u32(value: bytes | None) -> int | None:
    return None if value is None or len(value) < 4 else int(struct.unpack_from("=I", value)[0])


def as_s32(value: bytes | None) -> int | None:
    return None if value is None or len(value) < 4 else int(struct.unpack_from("=i", value)[0])


@attrs.frozen
class Message:
    kind: int
    flags: int
    seq: int
    payload: bytes


def messages(buf: bytes) -> Iterator[Message]:
    """Each message of a datagram."""
    offset = 0
    while offset + HEADER.size <= len(buf):
        length, kind, flags, seq, _pid = HEADER.unpack_from(buf, offset)
        if length < HEADER.size:
            return
        yield Message(kind, flags, seq, buf[offset + HEADER.size : offset + length])
        offset += align(length)


def pack_message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return HEADER.pack(HEADER.size + len(body), kind, NLM_F_REQUEST | flags, seq, 0) + body


def error_code(message: Message) -> int:
    """The errno of an NLMSG_ERROR (0: an ack)."""
    return -int(struct.unpack_from("=i", message.payload)[0])


def raise_for(code: int, what: str) -> None:
    if code:
        raise OSError(code, f"{what}: {os.strerror(code)}")


def rtnl_socket(*, blocking: bool, groups: int = 0) -> socket.socket:
    flags = socket.SOCK_RAW | socket.SOCK_CLOEXEC | (0 if blocking else socket.SOCK_NONBLOCK)
    sock = socket.socket(socket.AF_NETLINK, flags, socket.NETLINK_ROUTE)
    try:
        sock.bind((0, groups))
    except BaseException:
        sock.close()
        raise
    return sock


def enlarge_receive_buffer(sock: socket.socket) -> None:
    """Make room for bursts of events; as root the limit of net.core.rmem_max does not apply."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, EVENT_BUFFER)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, EVENT_BUFFER)


@attrs.define
class RtnlSocket:
    """A blocking rtnetlink socket for one thread: requests answered in order, and dumps."""

    sock: socket.socket = attrs.Factory(lambda: rtnl_socket(blocking=True))
    _seq: int = 0

    def close(self) -> None:
        """Idempotent (a socket closes once)."""
        self.sock.close()

    def batch(self, *requests: tuple[int, int, bytes]) -> list[tuple[int, list[Message]]]:
        """Send (type, flags, body) requests in one datagram, each acked; for each in turn,
        its errno (0: done) and the messages it was answered with before its ack."""
        seqs = []
        out = b""
        for kind, flags, body in requests:
            self._seq += 1
            seqs.append(self._seq)
            out += pack_message(kind, flags | NLM_F_ACK, self._seq, body)
        self.sock.send(out)
        replies: dict[int, list[Message]] = {s: [] for s in seqs}
        codes: dict[int, int] = {}
        while len(codes) < len(seqs):
            for message in messages(self.sock.recv(1 << 16)):
                if message.seq not in replies or message.seq in codes:
                    continue
                if message.kind == NLMSG_ERROR:
                    codes[message.seq] = error_code(message)
                else:
                    replies[message.seq].append(message)
        return [(codes[s], replies[s]) for s in seqs]

    def request(self, kind: int, flags: int, body: bytes, what: str) -> list[Message]:
        """One request; its answer (empty for a bare ack); OSError when refused."""
        ((code, replies),) = self.batch((kind, flags, body))
        raise_for(code, what)
        return replies

    def dump(self, kind: int, body: bytes, what: str) -> list[Message]:
        """Every message of a dump request (NLM_F_DUMP), in order."""
        self._seq += 1
        seq = self._seq
        self.sock.send(pack_message(kind, NLM_F_DUMP, seq, body))
        out: list[Message] = []
        while True:
            for message in messages(self.sock.recv(1 << 16)):
                if message.seq != seq:
                    continue
                if message.kind == NLMSG_DONE:
                    code = -(as_s32(message.payload) or 0)
                    # A dump interrupted by a change (NLM_F_DUMP_INTR) is asked again by the
                    # caller's next look; what came is still the best view there is.
                    raise_for(code if code != errno.EINTR else 0, what)
                    return out
                if message.kind == NLMSG_ERROR:
                    raise_for(error_code(message), what)
                    return out
                out.append(message)
