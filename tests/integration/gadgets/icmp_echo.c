// icmp_echo: every ICMP echo request and reply entering or leaving a container, with its
// ping id and sequence number, so that a test can tell a gap from a duplicate. Ring buffer.
// Both classifiers return TC_ACT_UNSPEC: other gadgets and engines on the veth still run.
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>

struct echo_t { u32 ifindex; u32 direction; u32 type; u32 id; u32 seq; };

BPF_RINGBUF_OUTPUT(echoes, 16);

static __always_inline void report(struct __sk_buff *skb, u32 direction)
{
    u8 vihl = 0, proto = 0, icmp[8] = {};
    if (skb->protocol != htons(ETH_P_IP))
        return;
    bpf_skb_load_bytes(skb, ETH_HLEN, &vihl, 1);
    bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct iphdr, protocol), &proto, 1);
    if (proto != 1)  // not ICMP
        return;
    if (bpf_skb_load_bytes(skb, ETH_HLEN + (vihl & 0xf) * 4, icmp, sizeof(icmp)) < 0)
        return;
    if (icmp[0] != 0 && icmp[0] != 8)  // echo reply, echo request
        return;
    struct echo_t e = {.ifindex = skb->ifindex, .direction = direction, .type = icmp[0],
                       .id = (icmp[4] << 8) | icmp[5], .seq = (icmp[6] << 8) | icmp[7]};
    echoes.ringbuf_output(&e, sizeof(e), 0);
}

SEC("classifier/ingress/into_container")
int into_container(struct __sk_buff *skb)
{
    report(skb, 0);
    return TC_ACT_UNSPEC;
}

SEC("classifier/egress/out_of_container")
int out_of_container(struct __sk_buff *skb)
{
    report(skb, 1);
    return TC_ACT_UNSPEC;
}
