// tcpconnect: every outgoing TCP connection of the host and the selected containers, once
// its outcome is known: established (with the handshake's latency) or failed (refused,
// reset or timed out before it was established).
//
//   engine run examples/tcpconnect.c --hook examples/tcpconnect_hook.py [--select name=web*]
//
// Record (ring buffer "connections"): result ("established" | "failed"), latency_ns (from
// connect() to the outcome), pid and comm of the process that called connect(), mntns_id (the
// container is found from it), family (2 = IPv4, 10 = IPv6), saddr/daddr (IPv4, dotted) or
// saddr6/daddr6 (IPv6), sport/dport (host order).
//
// Both transitions come from the tracepoint sock/inet_sock_set_state. The SYN_SENT one runs
// in the task calling connect(), so engine_selected() drops unselected containers there, in
// the kernel; the outcome arrives later, often in softirq on behalf of another task, so who
// connected is remembered per socket in `connecting` until then. The source port is only
// chosen after SYN_SENT, so every field is read at the outcome.

#define ENGINE_AF_INET 2
#define ENGINE_AF_INET6 10
#define ENGINE_IPPROTO_TCP 6
#define ENGINE_TCP_ESTABLISHED 1
#define ENGINE_TCP_SYN_SENT 2
#define ENGINE_TCP_CLOSE 7

struct connecting_t {
    u64 started_ns;
    u64 mntns_id;
    u32 pid;
    char comm[16];
};

struct connection_event {
    unsigned __int128 saddr6;
    unsigned __int128 daddr6;
    u64 mntns_id;
    u64 latency_ns;
    u32 pid;
    u32 saddr;
    u32 daddr;
    u16 sport;
    u16 dport;
    u16 family;
    char comm[16];
    char result[12];
};

BPF_HASH(connecting, u64, struct connecting_t, 16384);
BPF_RINGBUF_OUTPUT(connections, 64);

SEC("tracepoint/sock/inet_sock_set_state")
int tcp_state(struct tracepoint__sock__inet_sock_set_state *args)
{
    if (args->protocol != ENGINE_IPPROTO_TCP)
        return 0;
    u64 sk = (u64)args->skaddr;
    if (args->newstate == ENGINE_TCP_SYN_SENT) {
        if (!engine_selected())
            return 0;
        struct connecting_t start = {};
        start.started_ns = bpf_ktime_get_ns();
        start.mntns_id = engine_mntns_id();
        start.pid = bpf_get_current_pid_tgid() >> 32;
        bpf_get_current_comm(&start.comm, sizeof(start.comm));
        connecting.update(&sk, &start);
        return 0;
    }
    if (args->oldstate != ENGINE_TCP_SYN_SENT)
        return 0;
    struct connecting_t *start = connecting.lookup(&sk);
    if (!start)
        return 0;  // not selected, or connect() began before the gadget was attached
    struct connection_event *e = connections.ringbuf_reserve(sizeof(*e));
    if (!e) {
        connecting.delete(&sk);
        return 0;
    }
    __builtin_memset(e, 0, sizeof(*e));
    e->latency_ns = bpf_ktime_get_ns() - start->started_ns;
    e->mntns_id = start->mntns_id;
    e->pid = start->pid;
    __builtin_memcpy(e->comm, start->comm, sizeof(e->comm));
    e->family = args->family;
    e->sport = args->sport;
    e->dport = args->dport;
    if (args->family == ENGINE_AF_INET) {
        __builtin_memcpy(&e->saddr, args->saddr, 4);
        __builtin_memcpy(&e->daddr, args->daddr, 4);
    } else {
        __builtin_memcpy(&e->saddr6, args->saddr_v6, 16);
        __builtin_memcpy(&e->daddr6, args->daddr_v6, 16);
    }
    if (args->newstate == ENGINE_TCP_ESTABLISHED)
        __builtin_memcpy(e->result, "established", 12);
    else
        __builtin_memcpy(e->result, "failed", 7);
    connections.ringbuf_submit(e, 0);
    connecting.delete(&sk);
    return 0;
}
