"""C pieces that several test gadgets share: each test's gadget is its own text, but the same
check is written once."""

from __future__ import annotations

# A packet program's test: an IPv4 ICMP packet (headers included here).
IS_ICMP = r"""
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>

static __always_inline bool is_icmp(struct __sk_buff *skb)
{
    u8 proto = 0;
    if (skb->protocol != htons(ETH_P_IP))
        return false;
    bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct iphdr, protocol), &proto, 1);
    return proto == IPPROTO_ICMP;
}
"""

# A tracing program's test: the current task's name starts with "engflood" (the floods of
# tests/faults/flood.py and tests/integration/test_origin_flood.py).
FROM_THE_FLOODER = r"""
static __always_inline bool from_the_flooder(void)
{
    char comm[16];
    bpf_get_current_comm(&comm, sizeof(comm));
    return comm[0] == 'e' && comm[1] == 'n' && comm[2] == 'g' && comm[3] == 'f' &&
           comm[4] == 'l' && comm[5] == 'o' && comm[6] == 'o' && comm[7] == 'd';
}
"""
