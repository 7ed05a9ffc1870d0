"""``engine_skb_netns_id(skb)``: the netns a packet is in, for socket filter gadgets.

A socket filter program is one fd attached to a packet socket in every traced netns, so the
program itself must say where a packet was seen: the engine maps a record's ``netns_id`` to
the container of that netns (``World.container_for``, docs/events.md). No helper gives it:

- ``bpf_get_netns_cookie(skb)`` is refused for socket filters up to 6.1 and, where newer
  kernels accept it (6.18 here), it returns the initial netns's cookie, whatever the packet;
- ``bpf_get_socket_cookie(skb)`` is the cookie of ``skb->sk``, the socket that sent the
  packet (0 for most received ones), never the packet socket the filter runs for (af_packet
  runs filters without setting ``skb->sk``).

So the helper reads ``skb->dev->nd_net.net->ns.inum`` with ``bpf_probe_read_kernel`` (allowed
to socket filters loaded by root since 5.x): the nsfs inode of the netns of the device the
packet crosses, loopback included, which is the key the engine already uses for netns. The
offsets come from the running kernel's BTF, not from headers of another kernel; the helper is
added only to gadgets that call it, so that other gadgets pay nothing.

In a classifier the device is the host side of the veth: the helper then returns the host's
netns, and TC records name their container by ``ifindex`` instead.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from engine.gadget.model import Gadget, mask_comments
from engine.kernel.btf import Btf, BtfError, Kind

HELPER = "engine_skb_netns_id"
_CALLED = re.compile(rf"\b{HELPER}\s*\(")
_COMPOSITE = (Kind.STRUCT, Kind.UNION)

# (struct, member path) for each pointer or value the helper follows.
SKB_DEV = ("sk_buff", ("dev",))
DEV_NET = ("net_device", ("nd_net", "net"))
NET_INUM = ("net", ("ns", "inum"))


def member_offset(btf: Btf, struct_name: str, path: Sequence[str]) -> int:
    """Byte offset of ``struct_name.path[0].path[1]...``, looking through anonymous members."""
    candidates = [t for t in btf.named(struct_name) if t.kind in _COMPOSITE]
    if not candidates:
        raise BtfError(f"the kernel's BTF has no struct {struct_name}")
    type_id = candidates[0].type_id
    offset = 0
    for name in path:
        found = _find_member(btf, type_id, name)
        if found is None:
            raise BtfError(f"struct {struct_name} has no member {'.'.join(path)} in BTF")
        extra, type_id = found
        offset += extra
    return offset


def _find_member(btf: Btf, type_id: int, name: str) -> tuple[int, int] | None:
    """(byte offset, member type id) of ``name`` in the struct or union ``type_id``."""
    t = btf.resolve(type_id)
    for m in t.members:
        if m.name == name:
            return m.bit_offset // 8, m.type_id
        if not m.name and btf.resolve(m.type_id).kind in _COMPOSITE:
            inner = _find_member(btf, m.type_id, name)
            if inner is not None:
                return m.bit_offset // 8 + inner[0], inner[1]
    return None


def helper_source(btf: Btf) -> str:
    """The C definition of ``engine_skb_netns_id`` for the kernel described by ``btf``."""
    dev = member_offset(btf, *SKB_DEV)
    net = member_offset(btf, *DEV_NET)
    inum = member_offset(btf, *NET_INUM)
    return f"""\
/* The netns (nsfs inode) of the device a packet crosses (engine/skb_netns.py). */
static __always_inline u64 {HELPER}(struct __sk_buff *skb)
{{
    void *dev = 0, *net = 0;
    unsigned int inum = 0;
    bpf_probe_read_kernel(&dev, sizeof(dev), (void *)skb + {dev});
    if (!dev)
        return 0;
    bpf_probe_read_kernel(&net, sizeof(net), dev + {net});
    if (!net)
        return 0;
    bpf_probe_read_kernel(&inum, sizeof(inum), net + {inum});
    return inum;
}}
"""


def extra_source(gadget: Gadget, btf: Btf | None = None) -> list[str]:
    """What to compile before ``gadget``: the helper if the gadget calls it, else nothing.

    Blocking (reads the kernel's BTF when needed): call it from a worker thread.
    """
    if not _CALLED.search(mask_comments(gadget.source)):
        return []
    return [helper_source(btf if btf is not None else Btf.from_file())]
