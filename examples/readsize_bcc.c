// readsize_bcc: the sizes of successful read(2)s per container, as a log2 histogram, written
// the bcc way: a TRACEPOINT_PROBE and a BPF_HISTOGRAM, no buffer.
//
//   engine run examples/readsize_bcc.c --duration 10          # the histogram when it stops
//   engine run examples/readsize_bcc.c --maps 5 --maps-clear  # one every 5 s
//
// A gadget without a ring or perf buffer emits its maps when the engine stops (with --maps,
// every interval too): one "map" record for "sizes", kind "log2_histogram", a section per
// container (its key's mntns_id names it; 0 when unknown), each with its buckets in bytes
// (docs/events.md, "Maps as output"). The live table draws them as bcc's tools do.

struct size_key {
    u64 mntns_id;
    u64 slot;
};

BPF_HISTOGRAM(sizes, struct size_key, 1024);

TRACEPOINT_PROBE(syscalls, sys_exit_read)
{
    if (args->ret <= 0 || !engine_selected())
        return 0;
    struct size_key key = {.mntns_id = engine_mntns_id(), .slot = bpf_log2l(args->ret)};
    sizes.atomic_increment(key);
    return 0;
}
