// echo_replies: the ICMP echo replies entering a container, through a perf buffer. Its
// classifier has the same function name as icmp_echo.c's on purpose: two gadgets in one
// engine may name their programs alike.
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>

struct reply_t { u32 ifindex; u32 seq; };

BPF_PERF_OUTPUT(replies);

SEC("classifier/ingress/into_container")
int into_container(struct __sk_buff *skb)
{
    u8 vihl = 0, proto = 0, icmp[8] = {};
    if (skb->protocol != htons(ETH_P_IP))
        return TC_ACT_UNSPEC;
    bpf_skb_load_bytes(skb, ETH_HLEN, &vihl, 1);
    bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct iphdr, protocol), &proto, 1);
    if (proto != 1)  // not ICMP
        return TC_ACT_UNSPEC;
    if (bpf_skb_load_bytes(skb, ETH_HLEN + (vihl & 0xf) * 4, icmp, sizeof(icmp)) < 0)
        return TC_ACT_UNSPEC;
    if (icmp[0] == 0) {
        struct reply_t r = {.ifindex = skb->ifindex, .seq = (icmp[6] << 8) | icmp[7]};
        replies.perf_submit(skb, &r, sizeof(r));
    }
    return TC_ACT_UNSPEC;
}
