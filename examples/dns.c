// dns: DNS queries (UDP, port 53, IPv4) sent or received in each traced container, seen by a
// socket filter in the container's network namespace.
//
//   engine run examples/dns.c --hook examples/dns_hook.py [--select name=web*]
//
// Record (ring buffer "queries"): name (the QNAME, dotted, up to 127 characters), qtype
// (1 = A, 28 = AAAA...), id (the query id), saddr/daddr (dotted), sport/dport (host order),
// outgoing (true: the container sent it; false: it arrived there, e.g. at a DNS server
// container), netns_id (the container is found from it, engine_skb_netns_id()).
// Responses (QR bit set) are not recorded.
//
// The filter returns 0: the engine's packet socket never queues anything, the packet goes on.
#include <uapi/linux/if_ether.h>
#include <uapi/linux/if_packet.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/udp.h>

#define DNS_PORT 53
#define DNS_HEADER 12
#define NAME_MAX_LEN 128

struct dns_query {
    u64 netns_id;
    u32 saddr;
    u32 daddr;
    __be16 sport;
    __be16 dport;
    __be16 id;
    __be16 qtype;
    bool outgoing;
    char name[NAME_MAX_LEN];
};

BPF_RINGBUF_OUTPUT(queries, 64);

SEC("socket/dns")
int dns_queries(struct __sk_buff *skb)
{
    if (skb->protocol != htons(ETH_P_IP))
        return 0;
    struct iphdr ip;
    if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
        return 0;
    if (ip.protocol != IPPROTO_UDP || (ip.frag_off & htons(0x1fff)))
        return 0;
    u32 udp_at = ETH_HLEN + ip.ihl * 4;
    struct udphdr udp;
    if (bpf_skb_load_bytes(skb, udp_at, &udp, sizeof(udp)) < 0)
        return 0;
    if (udp.dest != htons(DNS_PORT))
        return 0;
    u32 dns_at = udp_at + sizeof(udp);
    u8 header[4];  // id, then flags: QR is the top bit of the third byte
    if (bpf_skb_load_bytes(skb, dns_at, header, sizeof(header)) < 0 || (header[2] & 0x80))
        return 0;

    struct dns_query *q = queries.ringbuf_reserve(sizeof(*q));
    if (!q)
        return 0;
    __builtin_memset(q, 0, sizeof(*q));
    q->netns_id = engine_skb_netns_id(skb);
    q->saddr = ip.saddr;
    q->daddr = ip.daddr;
    q->sport = udp.source;
    q->dport = udp.dest;
    __builtin_memcpy(&q->id, header, 2);
    q->outgoing = skb->pkt_type == PACKET_OUTGOING;

    // QNAME: labels of <length><bytes>, ending with a zero length. Wire byte i (i > 0) goes
    // to name[i - 1], a length byte becoming the dot between two labels.
    u32 at = dns_at + DNS_HEADER;
    u32 label_left = 0;
    for (u32 i = 0; i < NAME_MAX_LEN; i++) {
        u8 c;
        if (bpf_skb_load_bytes(skb, at + i, &c, 1) < 0)
            break;
        if (!label_left && c == 0) {
            bpf_skb_load_bytes(skb, at + i + 1, &q->qtype, sizeof(q->qtype));
            break;
        }
        if (i > 0)
            q->name[i - 1] = label_left ? c : '.';
        label_left = label_left ? label_left - 1 : c;
    }
    queries.ringbuf_submit(q, 0);
    return 0;
}
