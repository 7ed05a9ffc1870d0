// python_usdt: Python function calls, from the python:function__entry USDT probe of
// /usr/bin/python3.11, in every python3.11 process: those already running and those started
// later (the engine has the kernel count the probe's semaphore up in each of them).
//
//   engine run examples/python_usdt.c
//
// A USDT program receives `struct pt_regs *ctx`; bpf_usdt_readarg(N, ctx, &v) reads argument
// N (from 1), and v's size must match the argument's (`readelf -n` shows them: here
// 8@%rbp 8@%r12 -4@%eax: file name pointer, function name pointer, int line number).
// CPython 3.11 fires function__entry only on its tracing path, which it takes while a trace
// or profile function is set (sys.settrace/sys.setprofile, as debuggers and profilers do);
// its fast path skips the probe. python:gc__start and python:import__find__load__start fire
// unconditionally.
//
// Record (ring buffer "calls"): pid, line, file, function.
#include <uapi/linux/ptrace.h>

struct py_call {
    u32 pid;
    s32 line;
    char file[96];
    char function[48];
};

BPF_RINGBUF_OUTPUT(calls, 64);

SEC("usdt//usr/bin/python3.11:python:function__entry")
int on_python_call(struct pt_regs *ctx)
{
    u64 file = 0, function = 0;
    struct py_call *c = calls.ringbuf_reserve(sizeof(*c));
    if (!c)
        return 0;
    c->pid = bpf_get_current_pid_tgid() >> 32;
    c->line = 0;
    bpf_usdt_readarg(1, ctx, &file);
    bpf_usdt_readarg(2, ctx, &function);
    bpf_usdt_readarg(3, ctx, &c->line);
    bpf_probe_read_user_str(&c->file, sizeof(c->file), (void *)file);
    bpf_probe_read_user_str(&c->function, sizeof(c->function), (void *)function);
    calls.ringbuf_submit(c, 0);
    return 0;
}
