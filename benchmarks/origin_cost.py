"""The kernel's cost per record of the automatic origin (issue 12): ns per program run.

Three variants of one gadget, in the same run, rounds alternating between them:

- ``plain``: the gadget's text compiled by bcc as written (no rewrite, no header);
- ``origin``: loaded by the engine (``load_sync``): every write carries the origin header;
- ``origin + selection``: the same, with a selection that takes the writer (one more map
  lookup per record: the check every static program's write makes under a selection).

Tracing programs (a ``ringbuf_output`` and a ``perf_submit`` from
``tracepoint/syscalls/sys_enter_getppid``, driven by ``hammer.c`` at a fixed rate) are timed
by the kernel's own program statistics (``run_time_ns / run_cnt`` in the program's fdinfo,
with ``BPF_ENABLE_STATS`` held on an fd, so the global sysctl is never touched). The socket
filter is run by ``BPF_PROG_TEST_RUN`` on a 98-byte ICMP packet, which reports ns per run.
Packet programs make no selection check (they are attached per netns), so the socket filter
has no third variant. Every write succeeds: the buffers are large enough for a whole round.
"""

from __future__ import annotations

import ctypes as ct
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.results import Figure, median

ROUNDS = 5
CALLS_PER_SECOND = 100_000
SECONDS = 1.0
PACKET_RUNS = 20_000
VARIANTS = ("plain", "origin", "origin + selection")

TRACEPOINT_RING = r"""
struct rec_t { u32 pid; u32 seq; char comm[16]; };
BPF_RINGBUF_OUTPUT(out, 8192);
SEC("tracepoint/syscalls/sys_enter_getppid")
int bench(void *ctx)
{
    struct rec_t r = {.pid = bpf_get_current_pid_tgid() >> 32, .seq = 0};
    bpf_get_current_comm(&r.comm, sizeof(r.comm));
    out.ringbuf_output(&r, sizeof(r), BPF_RB_NO_WAKEUP);
    return 0;
}
"""
TRACEPOINT_PERF = r"""
struct rec_t { u32 pid; u32 seq; char comm[16]; };
BPF_PERF_OUTPUT(out);
SEC("tracepoint/syscalls/sys_enter_getppid")
int bench(void *ctx)
{
    struct rec_t r = {.pid = bpf_get_current_pid_tgid() >> 32, .seq = 0};
    bpf_get_current_comm(&r.comm, sizeof(r.comm));
    out.perf_submit(ctx, &r, sizeof(r));
    return 0;
}
"""
SOCKET = r"""
struct rec_t { u32 len; u32 dir; };
BPF_RINGBUF_OUTPUT(out, 8192);
SEC("socket")
int bench(struct __sk_buff *skb)
{
    struct rec_t r = {.len = skb->len, .dir = skb->pkt_type};
    out.ringbuf_output(&r, sizeof(r), BPF_RB_NO_WAKEUP);
    return 0;
}
"""
# Ethernet + IPv4 + ICMP echo request with 56 bytes of data: what ping sends.
PACKET = (
    b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00"
    + bytes.fromhex("4500005400004000400100007f0000017f000001")
    + bytes.fromhex("0800f7ff00010001") + b"\x00" * 56
)  # fmt: skip

_SYS_BPF = 321  # x86-64
_BPF_PROG_TEST_RUN = 10
_BPF_ENABLE_STATS = 32


class _TestRun(ct.Structure):
    _fields_ = (
        ("prog_fd", ct.c_uint32),
        ("retval", ct.c_uint32),
        ("data_size_in", ct.c_uint32),
        ("data_size_out", ct.c_uint32),
        ("data_in", ct.c_uint64),
        ("data_out", ct.c_uint64),
        ("repeat", ct.c_uint32),
        ("duration", ct.c_uint32),
    )


class _EnableStats(ct.Structure):
    _fields_ = (("type", ct.c_uint32),)


def _bpf(cmd: int, attr: ct.Structure) -> int:
    libc = ct.CDLL(None, use_errno=True)
    result = int(libc.syscall(_SYS_BPF, cmd, ct.byref(attr), ct.sizeof(attr)))
    if result < 0:
        raise OSError(ct.get_errno(), f"bpf({cmd}): {os.strerror(ct.get_errno())}")
    return result


@contextmanager
def _stats_on() -> Iterator[None]:
    """Run-time statistics for every program while the fd is open (BPF_STATS_RUN_TIME)."""
    fd = _bpf(_BPF_ENABLE_STATS, _EnableStats(0))
    try:
        yield
    finally:
        os.close(fd)


def _run_stats(prog_fd: int) -> tuple[int, int]:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/self/fdinfo/{prog_fd}").read_text().splitlines()
    )
    return int(fields.get("run_time_ns", "0")), int(fields.get("run_cnt", "0"))


def _plain(source: str, kind: str) -> tuple[Any, int]:
    """bcc as a user would run it: the text as written; the program's fd."""
    from bcc import BPF

    bpf = BPF(text="#define SEC(name) __attribute__((section(name), used))\n" + source)
    fn = bpf.load_func("bench", BPF.SOCKET_FILTER if kind == "socket" else BPF.TRACEPOINT)
    return bpf, int(fn.fd)


def _engine(source: str, selection: bool) -> tuple[Any, int]:
    """Loaded by the engine (origin rewrite); with ``selection``, one that takes this host."""
    from engine.bcc.loader import load_sync
    from engine.gadget.model import Gadget
    from engine.kernel import skb_netns

    gadget = Gadget.from_source(source, "bench.c")
    # As the engine loads it: a socket filter's origin needs the packet's netns helper.
    loaded = load_sync(gadget, extra_source=skb_netns.extra_source(gadget))
    if selection:
        mntns = os.stat("/proc/self/ns/mnt").st_ino
        loaded.bpf.get_table("engine_mntns")[ct.c_ulonglong(mntns)] = ct.c_ubyte(1)
        loaded.bpf.get_table("engine_filter")[ct.c_int(0)] = ct.c_uint(1)
    return loaded.bpf, loaded.program("bench").fd


def _load(source: str, kind: str, variant: str) -> tuple[Any, int]:
    if variant == "plain":
        return _plain(source, kind)
    return _engine(source, variant == "origin + selection")


def _tracepoint_round(bpf: Any, fd: int, hammer: Path, perf: bool) -> float:
    """ns per run of the program while the hammer calls getppid at a fixed rate."""
    if perf:
        bpf["out"].open_perf_buffer(lambda *_: None, page_cnt=1024, wakeup_events=1000)
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            bpf.perf_buffer_poll(100)

    reader = threading.Thread(target=drain) if perf else None
    if reader is not None:
        reader.start()
    bpf.attach_tracepoint(tp="syscalls:sys_enter_getppid", fn_name="bench")
    try:
        before = _run_stats(fd)
        argv = [str(hammer), str(SECONDS), str(CALLS_PER_SECOND)]
        subprocess.run(argv, input=b"x", check=True, capture_output=True)
        after = _run_stats(fd)
    finally:
        bpf.detach_tracepoint(tp="syscalls:sys_enter_getppid")
        stop.set()
        if reader is not None:
            reader.join()
    runs = after[1] - before[1]
    return (after[0] - before[0]) / runs if runs else 0.0


def _socket_round(bpf: Any, fd: int) -> float:
    data = ct.create_string_buffer(PACKET, len(PACKET))
    attr = _TestRun(
        prog_fd=fd,
        data_size_in=len(PACKET),
        data_in=ct.addressof(data),
        repeat=PACKET_RUNS,
    )
    _bpf(_BPF_PROG_TEST_RUN, attr)
    return float(attr.duration)


def _measure_one(
    name: str,
    variants: tuple[str, ...],
    run: Callable[[Any, int], float],
    *,
    source: str,
    kind: str,
    rounds: int,
) -> tuple[list[Figure], dict[str, list[float]]]:
    samples: dict[str, list[float]] = {v: [] for v in variants}
    with _stats_on():
        for _ in range(rounds):
            for variant in variants:
                bpf, fd = _load(source, kind, variant)
                try:
                    samples[variant].append(run(bpf, fd))
                finally:
                    bpf.cleanup()
    base = median(samples["plain"])
    figures = [
        Figure(
            f"origin cost, {name}: {variant}",
            median(samples[variant]),
            "ns/record",
            baseline=base,
            baseline_name="plain, same run",
            note=f"median of {rounds} rounds",
        )
        for variant in variants
    ]
    return figures, samples


def measure(hammer: Path, rounds: int = ROUNDS) -> tuple[list[Figure], dict[str, Any]]:
    figures: list[Figure] = []
    details: dict[str, Any] = {}
    cases = [
        ("tracepoint ringbuf_output", VARIANTS, TRACEPOINT_RING, "tracepoint", False),
        ("tracepoint perf_submit", VARIANTS, TRACEPOINT_PERF, "tracepoint", True),
    ]
    for name, variants, source, kind, perf in cases:

        def tracing(bpf: Any, fd: int, perf: bool = perf) -> float:
            return _tracepoint_round(bpf, fd, hammer, perf)

        found, samples = _measure_one(
            name, variants, tracing, source=source, kind=kind, rounds=rounds
        )
        figures += found
        details[name] = samples
    name = "socket filter ringbuf_output"
    found, samples = _measure_one(
        name, VARIANTS[:2], _socket_round, source=SOCKET, kind="socket", rounds=rounds
    )
    figures += found
    details[name] = samples
    return figures, details
