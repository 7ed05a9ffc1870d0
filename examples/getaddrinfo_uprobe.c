// getaddrinfo_uprobe: every name lookup through libc's getaddrinfo, with its outcome.
//
//   engine run examples/getaddrinfo_uprobe.c
//
// A uprobe on getaddrinfo (in "libc", found through the dynamic linker's cache like
// ld.so would) remembers the host name per thread; the uretprobe reports it with the return
// code (0, or an EAI_* error). Uprobe programs receive `struct pt_regs *ctx`: arguments with
// PT_REGS_PARMn(ctx), the return value with PT_REGS_RC(ctx).
//
// Record (ring buffer "lookups"): pid, ret, comm, host.
#include <uapi/linux/ptrace.h>

struct lookup {
    u32 pid;
    s32 ret;
    char comm[16];
    char host[64];
};

BPF_HASH(pending, u64, struct lookup, 1024);
BPF_RINGBUF_OUTPUT(lookups, 16);

SEC("uprobe/libc:getaddrinfo")
int lookup_start(struct pt_regs *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    struct lookup l = {};
    l.pid = id >> 32;
    bpf_get_current_comm(&l.comm, sizeof(l.comm));
    bpf_probe_read_user_str(&l.host, sizeof(l.host), (void *)PT_REGS_PARM1(ctx));
    pending.update(&id, &l);
    return 0;
}

SEC("uretprobe/libc:getaddrinfo")
int lookup_done(struct pt_regs *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    struct lookup *l = pending.lookup(&id);
    if (!l)
        return 0;
    l->ret = PT_REGS_RC(ctx);
    lookups.ringbuf_output(l, sizeof(*l), 0);
    pending.delete(&id);
    return 0;
}
