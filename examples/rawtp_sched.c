// rawtp_sched: every successful exec, from the raw tracepoint sched_process_exec.
//
//   engine run examples/rawtp_sched.c
//
// A raw tracepoint receives the tracepoint's raw arguments as `u64 *ctx`; for
// sched_process_exec they are (struct task_struct *p, pid_t old_pid, struct linux_binprm
// *bprm). Cheaper than the formatted tracepoint, and available on every kernel here.
//
// Record (ring buffer "execs"): pid, old_pid (differs when a thread other than the leader
// exec'd), comm (the new program's name), filename (what was executed).

struct exec_seen {
    u32 pid;
    u32 old_pid;
    char comm[16];
    char filename[128];
};

BPF_RINGBUF_OUTPUT(execs, 64);

SEC("raw_tp/sched_process_exec")
int on_exec(u64 *ctx)
{
    struct linux_binprm__btf *bprm = (struct linux_binprm__btf *)ctx[2];
    const char *filename = 0;
    if (!engine_selected())
        return 0;
    struct exec_seen *e = execs.ringbuf_reserve(sizeof(*e));
    if (!e)
        return 0;
    e->pid = bpf_get_current_pid_tgid() >> 32;
    e->old_pid = (u32)ctx[1];
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    bpf_probe_read_kernel(&filename, sizeof(filename), &bprm->filename);
    bpf_probe_read_kernel_str(&e->filename, sizeof(e->filename), filename);
    execs.ringbuf_submit(e, 0);
    return 0;
}
