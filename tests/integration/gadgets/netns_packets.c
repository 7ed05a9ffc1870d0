// netns_packets: every packet a traced netns's packet socket sees, with that netns's id. A
// socket filter: the engine attaches it in every traced netns, veth or not.
struct packet_t { u64 netns_id; u32 len; };

BPF_RINGBUF_OUTPUT(packets, 16);

SEC("socket")
int netns_packets(struct __sk_buff *skb)
{
    struct packet_t p = {.netns_id = engine_skb_netns_id(skb), .len = skb->len};
    packets.ringbuf_output(&p, sizeof(p), 0);
    return 0;
}
