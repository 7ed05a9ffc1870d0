/* iter_tasks.c: one record per task (thread) on the machine, from the task iterator.
 *
 * Each record is written with bpf_seq_write as this fixed, little-endian struct (24 bytes):
 *
 *     struct task_record {
 *         __u32 pid;       // the task's id (a thread id; the kernel's task->pid)
 *         __u32 tgid;      // its process id (task->tgid)
 *         char comm[16];   // its name, NUL-padded (task->comm)
 *     };
 *
 * The dead perf_submit to `tasks` (a BPF_PERF_OUTPUT the engine opens no reader for) makes
 * bcc record the struct's fields, so the engine decodes each record into an event with
 * source "tasks" (docs/programs.md; the engine's prelude has ITER_OUTPUT for both lines).
 *
 * `struct bpf_iter__task` and `struct task_struct__btf` get their layouts from the running
 * kernel's BTF (engine/btf.py, docs/btf.md), not from the kernel headers bcc compiles with.
 */

struct task_record {
    __u32 pid;
    __u32 tgid;
    char comm[16];
};

BPF_PERF_OUTPUT(tasks);

SEC("iter/task")
int list_tasks(struct bpf_iter__task *ctx)
{
    struct task_struct__btf *task = ctx->task;
    struct task_record rec = {};

    /* The iterator calls once more with no task at the end of the walk. */
    if (!task)
        return 0;
    rec.pid = task->pid;
    rec.tgid = task->tgid;
    bpf_probe_read_kernel_str(rec.comm, sizeof(rec.comm), task->comm);
    if (0)
        tasks.perf_submit(ctx, &rec, sizeof(rec));
    bpf_seq_write(ctx->meta->seq, &rec, sizeof(rec));
    return 0;
}
