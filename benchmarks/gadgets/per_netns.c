// Churn, first-packet and leak gadget: every per-netns kind a gadget can have. Each program
// reports the ICMP echo requests a container sends (its entrypoint pings the bridge once) to
// the ring buffer `echoes`, so that the benchmark can tell whose first packet was seen. Each
// record names its netns (socket: netns_id; TC: the host-side ifindex) as real gadgets do, so
// that the engine holds it while that netns is pending identification (docs/events.md).
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>

#define SEEN_BY_SOCKET 0
#define SEEN_BY_TC 1
#define ICMP_ECHO_REQUEST 8

struct echo_t {
    u64 netns_id;
    u32 saddr;
    u32 seen_by;
    u32 ifindex;
};

BPF_RINGBUF_OUTPUT(echoes, 16);

static __always_inline void note_echo(struct __sk_buff *skb, u32 seen_by)
{
    u8 version_ihl = 0, proto = 0, type = 0;
    u32 saddr = 0;
    if (skb->protocol != htons(ETH_P_IP))
        return;
    if (bpf_skb_load_bytes(skb, ETH_HLEN, &version_ihl, 1) ||
        bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct iphdr, protocol), &proto, 1) ||
        proto != IPPROTO_ICMP)
        return;
    if (bpf_skb_load_bytes(skb, ETH_HLEN + (version_ihl & 0xf) * 4, &type, 1) ||
        type != ICMP_ECHO_REQUEST)
        return;
    if (bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct iphdr, saddr), &saddr, 4))
        return;
    struct echo_t e = {.saddr = saddr, .seen_by = seen_by};
    if (seen_by == SEEN_BY_SOCKET)
        e.netns_id = engine_skb_netns_id(skb);
    else
        e.ifindex = skb->ifindex;
    echoes.ringbuf_output(&e, sizeof(e), 0);
}

SEC("socket")
int seen_by_socket(struct __sk_buff *skb)
{
    note_echo(skb, SEEN_BY_SOCKET);
    return 0;
}

SEC("classifier/ingress/tc_in")
int tc_in(struct __sk_buff *skb)
{
    return TC_ACT_UNSPEC;
}

// The engine's directions are the container's: egress is what leaves it (docs/tc.md).
SEC("classifier/egress/tc_out")
int tc_out(struct __sk_buff *skb)
{
    note_echo(skb, SEEN_BY_TC);
    return TC_ACT_UNSPEC;
}

SEC("iter/tcp")
int list_tcp(struct bpf_iter__tcp *ctx)
{
    return 0;
}
