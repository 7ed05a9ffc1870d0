// One ring-buffer record per getppid() call of the benchmark's hammer process.
#include <linux/sched.h>

struct call_event {
    u32 pid;
    u32 tid;
    u64 ts;
    char comm[TASK_COMM_LEN];
};

BPF_ARRAY(target, u32, 1);  // the hammer's pid, set by the benchmark
// Calls the program saw: the kernel skips a program now and then (recursion protection
// while another BPF program runs on the CPU); those calls are no reader's loss.
BPF_ARRAY(fired, u64, 1);
BPF_RINGBUF_OUTPUT(events, 64);

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
    u32 zero = 0;
    u64 id = bpf_get_current_pid_tgid();
    u32 *want = target.lookup(&zero);
    if (!want || *want != id >> 32)
        return 0;
    fired.atomic_increment(zero);
    struct call_event *e = events.ringbuf_reserve(sizeof(*e));
    if (!e)
        return 0;
    e->pid = id >> 32;
    e->tid = id;
    e->ts = bpf_ktime_get_ns();
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    events.ringbuf_submit(e, 0);
    return 0;
}
