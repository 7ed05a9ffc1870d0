"""The few tc messages the engine sends (clsact qdisc, bpf filters), made and read with struct.

Each function takes a blocking ``RtnlSocket`` and runs on the host rtnetlink worker
(engine/netns/worker.py): tc requests wait on the RTNL lock.
"""

from __future__ import annotations

import errno
import socket
import struct

import attrs

from engine.netns.netlink import (
    NLM_F_CREATE,
    NLM_F_EXCL,
    RtnlSocket,
    as_str,
    attr_map,
    pack_attr,
    pack_str,
    pack_u32,
)

RTM_NEWQDISC = 36
RTM_NEWTFILTER, RTM_DELTFILTER, RTM_GETTFILTER = 44, 45, 46
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_BPF_FD, TCA_BPF_NAME, TCA_BPF_FLAGS = 6, 7, 8
TCA_BPF_FLAG_ACT_DIRECT = 1
TC_H_CLSACT = 0xFFFFFFF1
TC_H_CLSACT_HANDLE = 0xFFFF0000
ETH_P_ALL = 0x0003
TCMSG = struct.Struct("=BxxxiIII")


@attrs.frozen
class FilterInfo:
    """A filter (or a priority's header entry) as a dump lists it."""

    prio: int
    handle: int
    kind: str | None
    bpf_name: str | None


def _tcmsg(ifindex: int, handle: int, parent: int, info: int) -> bytes:
    return TCMSG.pack(socket.AF_UNSPEC, ifindex, handle, parent, info)


def _info(prio: int) -> int:
    return (prio << 16) | socket.htons(ETH_P_ALL)


Request = tuple[int, int, bytes]


def clsact_request(ifindex: int) -> Request:
    """Add a clsact qdisc; EEXIST when one is there (then nothing changes)."""
    body = _tcmsg(ifindex, TC_H_CLSACT_HANDLE, TC_H_CLSACT, 0) + pack_str(TCA_KIND, "clsact")
    return RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL, body


def check_clsact(code: int) -> None:
    if code not in (0, errno.EEXIST):
        raise OSError(code, f"cannot add a clsact qdisc: {errno.errorcode.get(code, code)}")


def list_filters(sock: RtnlSocket, ifindex: int, parent: int) -> list[FilterInfo]:
    """The filters on one hook of one device (the kernel lists that device's only)."""
    out = []
    for m in sock.dump(RTM_GETTFILTER, _tcmsg(ifindex, 0, parent, 0), "tc filters"):
        if m.kind != RTM_NEWTFILTER or len(m.payload) < TCMSG.size:
            continue
        _family, _ifindex, handle, _parent, info = TCMSG.unpack_from(m.payload)
        top = attr_map(m.payload, TCMSG.size)
        options = attr_map(top.get(TCA_OPTIONS, b""))
        name = as_str(options.get(TCA_BPF_NAME))
        out.append(FilterInfo(info >> 16, handle, as_str(top.get(TCA_KIND)), name))
    return out


def bpf_filter_request(  # noqa: PLR0917 - a filter's fields, as the kernel takes them
    ifindex: int, parent: int, prio: int, handle: int, prog_fd: int, name: str
) -> Request:
    """Add a direct-action bpf filter at ``prio``; EEXIST/EINVAL when the priority is taken."""
    options = (
        pack_u32(TCA_BPF_FD, prog_fd)
        + pack_str(TCA_BPF_NAME, name)
        + pack_u32(TCA_BPF_FLAGS, TCA_BPF_FLAG_ACT_DIRECT)
    )
    body = _tcmsg(ifindex, handle, parent, _info(prio))
    body += pack_str(TCA_KIND, "bpf") + pack_attr(TCA_OPTIONS, options)
    return RTM_NEWTFILTER, NLM_F_CREATE | NLM_F_EXCL, body


def add_bpf_filter(  # noqa: PLR0917 - a filter's fields, as the kernel takes them
    sock: RtnlSocket, ifindex: int, parent: int, prio: int, handle: int, prog_fd: int, name: str
) -> None:
    kind, flags, body = bpf_filter_request(ifindex, parent, prio, handle, prog_fd, name)
    sock.request(kind, flags, body, "cannot add the tc filter")


def delete_filter_request(ifindex: int, parent: int, prio: int, handle: int) -> Request:
    """Delete our bpf filter at ``prio``; ENOENT/ENODEV/EINVAL when it is gone."""
    body = _tcmsg(ifindex, handle, parent, _info(prio)) + pack_str(TCA_KIND, "bpf")
    return RTM_DELTFILTER, 0, body


def delete_bpf_filter(sock: RtnlSocket, ifindex: int, parent: int, prio: int, handle: int) -> None:
    kind, flags, body = delete_filter_request(ifindex, parent, prio, handle)
    sock.request(kind, flags, body, "cannot delete the tc filter")
