"""Just enough rtnetlink, mount and BPF for the synthetic churn generator (benchmarks/netns_gen.py).

Messages are built with struct on plain sockets: the generator must reach 100 netns/s on two
CPUs while the engine runs, so nothing here forks or runs an event loop of its own.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct

from engine.netns.netlink import Message, RtnlSocket, pack_attr, pack_str

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR = 20
RTM_NEWNEIGH = 28
NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x4, 0x200, 0x400
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MASTER, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 10, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFA_LOCAL, IFA_ADDRESS = 2, 1
NDA_DST, NDA_LLADDR = 1, 2
NUD_PERMANENT = 0x80
IFF_UP = 0x1
CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MNT_DETACH = 0x2

_IFINFO = struct.Struct("=BxHiII")
_IFADDR = struct.Struct("=BBBBI")
_NDMSG = struct.Struct("=BxxxiHBB")

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare_net() -> None:
    """The calling thread (only it) moves into a new netns."""
    _check(_libc.unshare(CLONE_NEWNET), "unshare")


def setns(fd: int) -> None:
    _check(_libc.setns(fd, CLONE_NEWNET), "setns")


def bind_mount(source: str, target: str) -> None:
    _check(_libc.mount(source.encode(), target.encode(), None, MS_BIND, None), "mount")


def detach_mount(target: str) -> None:
    _check(_libc.umount2(target.encode(), MNT_DETACH), "umount2")


def attr(kind: int, value: bytes) -> bytes:
    return pack_attr(kind, value)


def name_attr(name: str) -> bytes:
    return pack_str(IFLA_IFNAME, name)


def ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, change)


def _address(index: int, address: str, prefix: int) -> bytes:
    local = socket.inet_aton(address)
    body = _IFADDR.pack(socket.AF_INET, prefix, 0, 0, index)
    return body + attr(IFA_LOCAL, local) + attr(IFA_ADDRESS, local)


class Rtnl:
    """The engine's blocking rtnetlink socket, in the netns it was made in, with the few
    requests the generator makes."""

    def __init__(self) -> None:
        self._sock = RtnlSocket()

    def close(self) -> None:
        self._sock.close()

    def request(self, *messages: tuple[int, int, bytes]) -> list[list[Message]]:
        """Send (type, flags, body) messages in one datagram; the answers of each; OSError
        for the first one the kernel refused."""
        answers = self._sock.batch(*messages)
        for code, _ in answers:
            if code:
                raise OSError(code, os.strerror(code))
        return [replies for _, replies in answers]

    def ifindex(self, name: str) -> int:
        ((reply,),) = self.request((RTM_GETLINK, 0, ifinfo() + name_attr(name)))
        index: int = _IFINFO.unpack_from(reply.payload)[2]
        return index

    def add_bridge(self, name: str, mac: bytes) -> int:
        """A bridge, up, with an address of its own: else it takes the lowest of its ports'
        and changes as they come and go, and frames sent to its old address flood every port.
        """
        kind = attr(IFLA_INFO_KIND, b"bridge")
        body = ifinfo(flags=IFF_UP, change=IFF_UP) + name_attr(name)
        body += attr(IFLA_ADDRESS, mac) + attr(IFLA_LINKINFO, kind)
        self.request((RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body))
        return self.ifindex(name)

    def add_veth(self, name: str, peer: str, master: int, *, peer_netns: int | None = None) -> None:
        """A veth pair, ``name`` up on bridge ``master``; ``peer`` in this netns or, given its
        fd, made inside ``peer_netns``."""
        where = b"" if peer_netns is None else attr(IFLA_NET_NS_FD, struct.pack("=I", peer_netns))
        peer_info = attr(VETH_INFO_PEER, ifinfo() + name_attr(peer) + where)
        info = attr(IFLA_INFO_KIND, b"veth") + attr(IFLA_INFO_DATA, peer_info)
        body = (
            ifinfo(flags=IFF_UP, change=IFF_UP)
            + name_attr(name)
            + attr(IFLA_MASTER, struct.pack("=I", master))
            + attr(IFLA_LINKINFO, info)
        )
        self.request((RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body))

    def move(self, index: int, netns_fd: int, new_name: str) -> None:
        body = ifinfo(index) + attr(IFLA_NET_NS_FD, struct.pack("=I", netns_fd))
        self.request((RTM_NEWLINK, NLM_F_ACK, body + name_attr(new_name)))

    def delete(self, index: int) -> None:
        self.request((RTM_DELLINK, NLM_F_ACK, ifinfo(index)))

    def add_address(self, index: int, address: str, prefix: int) -> None:
        create = NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
        self.request((RTM_NEWADDR, create, _address(index, address, prefix)))

    def up_address_neighbour(
        self, index: int, address: str, prefix: int, neighbour: str, lladdr: bytes
    ) -> None:
        """Up, then an address (its prefix route comes with it), then a permanent neighbour:
        in one datagram, so that the first packet leaves without waiting for ARP."""
        neigh = _NDMSG.pack(socket.AF_INET, index, NUD_PERMANENT, 0, 0)
        neigh += attr(NDA_DST, socket.inet_aton(neighbour)) + attr(NDA_LLADDR, lladdr)
        create = NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
        self.request(
            (RTM_NEWLINK, NLM_F_ACK, ifinfo(index, IFF_UP, IFF_UP)),
            (RTM_NEWADDR, create, _address(index, address, prefix)),
            (RTM_NEWNEIGH, create, neigh),
        )


def echo_request(ident: int, seq: int) -> bytes:
    """An ICMP echo request with its checksum."""
    header = struct.pack("!BBHHH", 8, 0, 0, ident & 0xFFFF, seq & 0xFFFF)
    total = sum(struct.unpack("!4H", header))
    total = (total & 0xFFFF) + (total >> 16)
    checksum = ~(total + (total >> 16)) & 0xFFFF
    return struct.pack("!BBHHH", 8, 0, checksum, ident & 0xFFFF, seq & 0xFFFF)


# --- a trivial BPF program for the baseline, loaded with the bpf() syscall -------------------

BPF_PROG_LOAD = 5
SOCKET_FILTER, SCHED_CLS = 1, 3
_SYS_BPF = 321  # x86_64


def load_return(prog_type: int, value: int) -> int:
    """A program that returns ``value`` (mov r0, value; exit); its fd."""
    insns = struct.pack("=BBhi", 0xB7, 0, 0, value) + struct.pack("=BBhi", 0x95, 0, 0, 0)
    code = ctypes.create_string_buffer(insns)
    licence = ctypes.create_string_buffer(b"GPL")
    bpf_attr = ctypes.create_string_buffer(
        struct.pack(
            "=IIQQIIQI", prog_type, 2, ctypes.addressof(code), ctypes.addressof(licence), 0, 0, 0, 0
        ),
        128,
    )
    _libc.syscall.restype = ctypes.c_long
    fd = _libc.syscall(_SYS_BPF, BPF_PROG_LOAD, bpf_attr, 128)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf(BPF_PROG_LOAD): {os.strerror(err)}")
    return int(fd)
