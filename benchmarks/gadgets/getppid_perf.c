// RECORDS_PER_CALL perf-buffer records per getppid() call of the benchmark's hammer process
// (as getppid_ringbuf.c, and why).
#include <linux/sched.h>

#define RECORDS_PER_CALL 8

struct call_event {
    u32 pid;
    u32 tid;
    u64 ts;
    char comm[TASK_COMM_LEN];
};

BPF_ARRAY(target, u32, 1);  // the hammer's pid, set by the benchmark
// Records the program was to write (RECORDS_PER_CALL for each call it saw): the kernel skips
// a program now and then (recursion protection while another BPF program runs on the CPU);
// those calls are no reader's loss.
BPF_ARRAY(fired, u64, 1);
BPF_PERF_OUTPUT(events);

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
    u32 zero = 0;
    u64 id = bpf_get_current_pid_tgid();
    u32 *want = target.lookup(&zero);
    if (!want || *want != id >> 32)
        return 0;
    fired.atomic_increment(zero, RECORDS_PER_CALL);
    struct call_event e = {};
    e.pid = id >> 32;
    e.tid = id;
    bpf_get_current_comm(&e.comm, sizeof(e.comm));
#pragma unroll
    for (int i = 0; i < RECORDS_PER_CALL; i++) {
        e.ts = bpf_ktime_get_ns();
        events.perf_submit(ctx, &e, sizeof(e));
    }
    return 0;
}
