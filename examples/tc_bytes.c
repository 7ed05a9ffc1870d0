// tc_bytes: packets and bytes per container, in both directions, counted by TC classifiers
// on the host side of each container's veth (docs/tc.md for the direction convention).
//
//   engine run examples/tc_bytes.c
//
// Maps: `traffic` (hash: host-side ifindex + direction -> packets, bytes). Every packet also
// goes to the ring buffer `packets` with ifindex, direction (0 = into the container,
// 1 = out of it), length and IP protocol; the engine names the container from `ifindex`.
// Both programs return TC_ACT_UNSPEC so that other tools' filters still see the packet.
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>

struct key_t { u32 ifindex; u32 direction; };
struct value_t { u64 packets; u64 bytes; };
struct packet_t { u32 ifindex; u32 direction; u32 len; u32 protocol; };

BPF_HASH(traffic, struct key_t, struct value_t, 4096);
BPF_RINGBUF_OUTPUT(packets, 64);

static __always_inline void account(struct __sk_buff *skb, u32 direction)
{
    struct key_t key = {.ifindex = skb->ifindex, .direction = direction};
    struct value_t zero = {}, *v = traffic.lookup_or_try_init(&key, &zero);
    if (v) {
        __sync_fetch_and_add(&v->packets, 1);
        __sync_fetch_and_add(&v->bytes, skb->len);
    }
    u8 proto = 0;
    if (skb->protocol == htons(ETH_P_IP))
        bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct iphdr, protocol), &proto, 1);
    struct packet_t p = {.ifindex = skb->ifindex, .direction = direction, .len = skb->len,
                         .protocol = proto};
    packets.ringbuf_output(&p, sizeof(p), 0);
}

SEC("classifier/ingress/into_container")
int into_container(struct __sk_buff *skb)
{
    account(skb, 0);
    return TC_ACT_UNSPEC;
}

SEC("classifier/egress/out_of_container")
int out_of_container(struct __sk_buff *skb)
{
    account(skb, 1);
    return TC_ACT_UNSPEC;
}
