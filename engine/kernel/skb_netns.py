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
added only to gadgets that call it or have socket filters writing records (the engine names the
netns of each of their records with it), so that other gadgets pay nothing.

In a classifier the device is the host side of the veth: the helper then returns the host's
netns, and TC records name their container by ``ifindex`` instead.
"""

from __future__ import annotations

import re

from engine.gadget.model import Gadget
from engine.gadget.origin import output_maps
from engine.gadget.sections import Kind
from engine.kernel.btf import Btf

HELPER = "engine_skb_netns_id"
_CALLED = re.compile(rf"\b{HELPER}\s*\(")

# (struct, member path) for each pointer or value the helper follows.
SKB_DEV = ("sk_buff", ("dev",))
DEV_NET = ("net_device", ("nd_net", "net"))
NET_INUM = ("net", ("ns", "inum"))


def helper_source(btf: Btf) -> str:
    """The C definition of ``engine_skb_netns_id`` for the kernel described by ``btf``."""
    dev = btf.member_offset(*SKB_DEV)
    net = btf.member_offset(*DEV_NET)
    inum = btf.member_offset(*NET_INUM)
    return f"""\
/* The netns (nsfs inode) of the device a packet crosses (engine/kernel/skb_netns.py). */
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


def calls_helper(gadget: Gadget) -> bool:
    """Whether the gadget's code calls the helper: in a macro counts, in a comment or string not."""
    return _CALLED.search(gadget.scan.with_directives) is not None


def needs_helper(gadget: Gadget) -> bool:
    """Whether the gadget calls the helper, or has socket filters and buffers: the engine
    names the netns of each record a socket filter writes with it (engine/gadget/origin.py)."""
    if calls_helper(gadget):
        return True
    return any(p.kind is Kind.SOCKET for p in gadget.programs) and bool(output_maps(gadget.scan))


def extra_source(gadget: Gadget, btf: Btf | None = None) -> list[str]:
    """What to compile before ``gadget``: the helper if it needs it, else nothing.

    Blocking (reads the kernel's BTF when needed): call it from a worker thread.
    """
    if not needs_helper(gadget):
        return []
    return [helper_source(btf if btf is not None else Btf.from_file())]
