// read_sizes: every successful read(2) as a ring buffer record: the reader's pid, the size
// read, its name. Made to be read as columns: examples/read_sizes_batches.py draws a log2
// histogram of the sizes per container from engine.batches() (docs/api.md), without a Python
// step per record.
//
//   python examples/read_sizes_batches.py --select 'image=busybox*' --seconds 30
//   engine run examples/read_sizes.c                     # the same records as JSON lines
//   engine run examples/read_sizes.c --param min_size=4096   # only reads of a page or more
//
// min_size is a gadget parameter (docs/programs.md, "Parameters"): `engine check` lists it,
// `--param` sets it at start, `Engine.set_param` while the gadget runs.

struct read_t {
    u32 pid;
    u32 fd;
    u64 size;
    char comm[16];
};

BPF_RINGBUF_OUTPUT(reads, 256);

ENGINE_PARAM(u64, min_size, 1, "report only reads of at least this many bytes");

SEC("tracepoint/syscalls/sys_exit_read")
int on_read(struct trace_event_raw_sys_exit *ctx)
{
    if (ctx->ret <= 0 || (u64)ctx->ret < ENGINE_PARAM_GET(min_size) || !engine_selected())
        return 0;
    struct read_t r = {.pid = bpf_get_current_pid_tgid() >> 32, .size = ctx->ret};
    bpf_get_current_comm(&r.comm, sizeof(r.comm));
    reads.ringbuf_output(&r, sizeof(r), 0);
    return 0;
}
