// exits_bcc: every process exit, written the bcc way: no SEC, no __btf types.
//
//   engine run examples/exits_bcc.c [--select name=web*]
//
// TRACEPOINT_PROBE(sched, sched_process_exit) is the program of
// tracepoint/sched/sched_process_exit (docs/programs.md, "bcc's naming conventions"), and
// `struct task_struct` is read through the running kernel's layout even where bcc's headers
// belong to another kernel (docs/btf.md, "Plain kernel structs").
//
// Record (perf buffer "exits"): pid, ppid, exit_code (as exit(2) got it), signal (that
// killed it, 0 for none), mntns_id (the container is found from it), comm. Threads other
// than a process's main thread are left out.
#include <linux/sched.h>

struct exit_t {
    u32 pid;
    u32 ppid;
    int exit_code;
    u32 signal;
    u64 mntns_id;
    char comm[TASK_COMM_LEN];
};

BPF_PERF_OUTPUT(exits);

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    if (task->pid != task->tgid || !engine_selected())
        return 0;
    struct exit_t e = {};
    e.pid = task->tgid;
    e.ppid = task->real_parent->tgid;
    e.exit_code = task->exit_code >> 8;
    e.signal = task->exit_code & 0x7f;
    e.mntns_id = engine_mntns_id();
    bpf_get_current_comm(&e.comm, sizeof(e.comm));
    exits.perf_submit(args, &e, sizeof(e));
    return 0;
}
