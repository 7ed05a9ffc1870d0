// Idle-cost gadget: a socket filter per selected container's netns, counting packets in a map
// (nothing reaches a buffer while the containers only sleep).
BPF_ARRAY(packets, u64, 1);

SEC("socket")
int count_packets(struct __sk_buff *skb)
{
    u32 zero = 0;
    u64 *n = packets.lookup(&zero);
    if (n)
        __sync_fetch_and_add(n, 1);
    return 0;
}
