// icmp_socket: every ICMP echo request and reply that a traced netns's packet socket sees, with
// that netns's id, ping id and sequence number. A socket filter: attached once in every traced
// netns (a pod's, shared by its containers), it sees both directions of every interface there.
#include <uapi/linux/if_ether.h>
#include <uapi/linux/if_packet.h>
#include <uapi/linux/ip.h>

struct echo_t { u64 netns_id; u32 outgoing; u32 type; u32 id; u32 seq; };

BPF_RINGBUF_OUTPUT(echoes, 16);

SEC("socket")
int icmp_socket(struct __sk_buff *skb)
{
    u8 vihl = 0, proto = 0, icmp[8] = {};
    if (skb->protocol != htons(ETH_P_IP))
        return 0;
    if (bpf_skb_load_bytes(skb, ETH_HLEN, &vihl, 1) < 0)
        return 0;
    bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct iphdr, protocol), &proto, 1);
    if (proto != 1)  // not ICMP
        return 0;
    if (bpf_skb_load_bytes(skb, ETH_HLEN + (vihl & 0xf) * 4, icmp, sizeof(icmp)) < 0)
        return 0;
    if (icmp[0] != 0 && icmp[0] != 8)  // echo reply, echo request
        return 0;
    struct echo_t e = {.netns_id = engine_skb_netns_id(skb),
                       .outgoing = skb->pkt_type == PACKET_OUTGOING,
                       .type = icmp[0], .id = (icmp[4] << 8) | icmp[5],
                       .seq = (icmp[6] << 8) | icmp[7]};
    echoes.ringbuf_output(&e, sizeof(e), 0);
    return 0;
}
