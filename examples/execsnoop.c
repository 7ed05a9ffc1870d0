// execsnoop: every process exec on the host and in containers, with its parent and file name.
//
//   engine run examples/execsnoop.c
//
// Record (ring buffer "events"): pid, ppid, uid, comm (the exec'ing task's name before the
// exec), filename (what was executed, up to 128 bytes).
#include <linux/sched.h>

struct exec_event {
    u32 pid;
    u32 ppid;
    u32 uid;
    char comm[TASK_COMM_LEN];
    char filename[128];
};

BPF_RINGBUF_OUTPUT(events, 64);

SEC("tracepoint/syscalls/sys_enter_execve")
int trace_execve(struct tracepoint__syscalls__sys_enter_execve *args)
{
    struct exec_event *e = events.ringbuf_reserve(sizeof(*e));
    if (!e)
        return 0;
    e->pid = bpf_get_current_pid_tgid() >> 32;
    e->uid = bpf_get_current_uid_gid();
    e->ppid = 0;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    bpf_probe_read_user_str(&e->filename, sizeof(e->filename), args->filename);
    events.ringbuf_submit(e, 0);
    return 0;
}
