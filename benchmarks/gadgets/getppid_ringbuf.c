// RECORDS_PER_CALL ring-buffer records per getppid() call of the benchmark's hammer process:
// one record per call made only 1.6-2.2 M records/s, fewer than the engine's batches() reads
// (benchmarks/README.md, Issue 16). benchmarks/bcc_side.py reads the number from here.
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
BPF_RINGBUF_OUTPUT(events, 64);

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
    u32 zero = 0;
    u64 id = bpf_get_current_pid_tgid();
    u32 *want = target.lookup(&zero);
    if (!want || *want != id >> 32)
        return 0;
    fired.atomic_increment(zero, RECORDS_PER_CALL);
#pragma unroll
    for (int i = 0; i < RECORDS_PER_CALL; i++) {
        struct call_event *e = events.ringbuf_reserve(sizeof(*e));
        if (!e)
            return 0;
        e->pid = id >> 32;
        e->tid = id;
        e->ts = bpf_ktime_get_ns();
        bpf_get_current_comm(&e->comm, sizeof(e->comm));
        events.ringbuf_submit(e, 0);
    }
    return 0;
}
