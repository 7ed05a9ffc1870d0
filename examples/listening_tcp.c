// listening_tcp: the TCP ports listening in each container, from the tcp socket iterator.
//
//   engine run examples/listening_tcp.c
//
// iter/tcp runs inside each traced netns (the kernel lists the sockets of the netns that
// reads the iterator), when the netns is attached, every --iter-interval seconds and on
// demand; every record is an event carrying that netns's container.
//
// Records are typed the way engine/iterators.py reads iterator output: `bpf_seq_write`
// writes the struct and a dead `perf_submit` of the same struct to `listeners` tells bcc (and
// so the engine's decoder) its fields. Each event's data: {"port", "family"} (2 = IPv4,
// 10 = IPv6).

#define TCP_LISTEN 10

struct listener_t {
    u32 port;
    u32 family;
};

BPF_PERF_OUTPUT(listeners);

SEC("iter/tcp")
int list_listeners(struct bpf_iter__tcp *ctx)
{
    struct sock_common__btf *sk = ctx->sk_common;
    /* The iterator calls once more with no socket at the end of the walk. */
    if (!sk || sk->skc_state != TCP_LISTEN)
        return 0;
    struct listener_t rec = {.port = sk->skc_num, .family = sk->skc_family};
    if (0)
        listeners.perf_submit(ctx, &rec, sizeof(rec));
    bpf_seq_write(ctx->meta->seq, &rec, sizeof(rec));
    return 0;
}
