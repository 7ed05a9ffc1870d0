// execsnoop: every process exec on the host and in the selected containers.
//
//   engine run examples/execsnoop.c [--select name=web*] [--host]
//
// Record (ring buffer "events"): pid, ppid, uid, mntns_id (the container is found from it),
// comm (the task's name before the exec), filename (what was executed, up to 128 bytes).
// Events of unselected containers are dropped in the kernel by engine_selected().

struct exec_event {
    u32 pid;
    u32 ppid;
    u32 uid;
    u32 pad;
    u64 mntns_id;
    char comm[16];
    char filename[128];
};

BPF_RINGBUF_OUTPUT(events, 64);

SEC("tracepoint/syscalls/sys_enter_execve")
int trace_execve(struct tracepoint__syscalls__sys_enter_execve *args)
{
    if (!engine_selected())
        return 0;
    struct exec_event *e = events.ringbuf_reserve(sizeof(*e));
    if (!e)
        return 0;
    struct task_struct__btf *task = (struct task_struct__btf *)bpf_get_current_task();
    struct task_struct__btf *parent = 0;
    e->pid = bpf_get_current_pid_tgid() >> 32;
    e->uid = bpf_get_current_uid_gid();
    e->pad = 0;
    bpf_probe_read_kernel(&parent, sizeof(parent), &task->real_parent);
    e->ppid = 0;
    if (parent)
        bpf_probe_read_kernel(&e->ppid, sizeof(e->ppid), &parent->tgid);
    e->mntns_id = engine_mntns_id();
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    bpf_probe_read_user_str(&e->filename, sizeof(e->filename), args->filename);
    events.ringbuf_submit(e, 0);
    return 0;
}
