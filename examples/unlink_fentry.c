// unlink_fentry: every file deletion (unlink, unlinkat, rm) with its outcome.
//
//   engine run examples/unlink_fentry.c
//
// fentry and fexit programs on do_unlinkat(int dfd, struct filename *name): they receive the
// function's raw arguments as `u64 *ctx` (ctx[0] = dfd, ctx[1] = name; for fexit ctx[2] is
// the return value). Needs BPF trampolines: `engine features` shows whether fentry/fexit run.
//
// Records: ring buffer "unlinks" (pid, comm, filename) on entry; ring buffer "results"
// (pid, ret: 0 or -errno, filename) on exit. `struct filename__btf` has the running
// kernel's true layout (docs/btf.md).

struct unlink_event {
    u32 pid;
    char comm[16];
    char filename[128];
};

struct unlink_result {
    u32 pid;
    s32 ret;
    char filename[128];
};

BPF_RINGBUF_OUTPUT(unlinks, 16);
BPF_RINGBUF_OUTPUT(results, 16);

SEC("fentry/do_unlinkat")
int unlink_entry(u64 *ctx)
{
    struct filename__btf *name = (struct filename__btf *)ctx[1];
    struct unlink_event *e = unlinks.ringbuf_reserve(sizeof(*e));
    if (!e)
        return 0;
    e->pid = bpf_get_current_pid_tgid() >> 32;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    bpf_probe_read_kernel_str(&e->filename, sizeof(e->filename), name->name);
    unlinks.ringbuf_submit(e, 0);
    return 0;
}

SEC("fexit/do_unlinkat")
int unlink_exit(u64 *ctx)
{
    struct filename__btf *name = (struct filename__btf *)ctx[1];
    struct unlink_result *r = results.ringbuf_reserve(sizeof(*r));
    if (!r)
        return 0;
    r->pid = bpf_get_current_pid_tgid() >> 32;
    r->ret = (s32)ctx[2];
    bpf_probe_read_kernel_str(&r->filename, sizeof(r->filename), name->name);
    results.ringbuf_submit(r, 0);
    return 0;
}
