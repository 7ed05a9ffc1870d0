// opensnoop_kprobe: every file opened on the host and in containers, with the result.
//
//   engine run examples/opensnoop_kprobe.c
//
// A kprobe on do_sys_openat2 remembers the file name per thread; the kretprobe on the same
// function reports it with the outcome. Needs kprobes (CONFIG_KPROBES): `engine features`.
//
// Record (ring buffer "opens"): pid, tid, ret (the new fd, or -errno), comm, filename.
#include <uapi/linux/ptrace.h>

struct open_event {
    u32 pid;
    u32 tid;
    s32 ret;
    char comm[16];
    char filename[128];
};

BPF_HASH(names, u64, const char *, 10240);
BPF_RINGBUF_OUTPUT(opens, 64);

SEC("kprobe/do_sys_openat2")
int open_entry(struct pt_regs *ctx)
{
    if (!engine_selected())
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    // do_sys_openat2(int dfd, const char __user *filename, struct open_how *how)
    const char *filename = (const char *)PT_REGS_PARM2(ctx);
    names.update(&id, &filename);
    return 0;
}

SEC("kretprobe/do_sys_openat2")
int open_return(struct pt_regs *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    const char **filename = names.lookup(&id);
    if (!filename)
        return 0;
    struct open_event *e = opens.ringbuf_reserve(sizeof(*e));
    if (e) {
        e->pid = id >> 32;
        e->tid = (u32)id;
        e->ret = PT_REGS_RC(ctx);
        bpf_get_current_comm(&e->comm, sizeof(e->comm));
        bpf_probe_read_user_str(&e->filename, sizeof(e->filename), *filename);
        opens.ringbuf_submit(e, 0);
    }
    names.delete(&id);
    return 0;
}
