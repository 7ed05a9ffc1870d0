"""Generated BTF layouts compiled by real bcc and run by the 6.18 verifier and iterators."""

from __future__ import annotations

import ctypes
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.gadget.scanner import SourceScan
from engine.kernel.btf import Btf, BtfType, Kind
from engine.kernel.layouts import btf_prelude
from tests.support.constants import EXAMPLES

pytestmark = pytest.mark.integration

# The engine's loader defines SEC for gadgets; these tests compile without it.
SEC = "#define SEC(name) __attribute__((section(name), used))\n"
TASK_RECORD = struct.Struct("<II16s")


def _compile(gadget: str, path: str = "x.c") -> Any:
    from bcc import BPF

    text = btf_prelude(SourceScan.of(gadget)) + SEC + f'#line 1 "{path}"\n' + gadget
    return BPF(text=text.encode())


def _run_iterator(gadget: str, function: str, target: str) -> bytes:
    """Compile, load as `bpf_iter__<target>`, attach, read the iterator to its end."""
    from bcc import BPF
    from bcc.libbcc import lib

    lib.bcc_iter_attach.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
    lib.bcc_iter_attach.restype = ctypes.c_int
    lib.bcc_iter_create.argtypes = [ctypes.c_int]
    lib.bcc_iter_create.restype = ctypes.c_int
    open_before = set(os.listdir("/proc/self/fd"))
    b = _compile(gadget)
    fds: list[int] = []
    try:
        name = function.encode()
        log = ctypes.create_string_buffer(1 << 20)
        prog = lib.bcc_func_load(
            b.module,
            BPF.TRACING,
            f"bpf_iter__{target}".encode(),
            lib.bpf_function_start(b.module, name),
            lib.bpf_function_size(b.module, name),
            lib.bpf_module_license(b.module),
            lib.bpf_module_kern_version(b.module),
            0,
            log,
            len(log),
            None,
            -1,
        )
        assert prog >= 0, log.value.decode(errors="replace")
        fds.append(prog)
        link = lib.bcc_iter_attach(prog, None, 0)
        assert link >= 0, f"bcc_iter_attach: {os.strerror(-link)}"
        fds.append(link)
        reader = lib.bcc_iter_create(link)
        assert reader >= 0, f"bcc_iter_create: {os.strerror(-reader)}"
        fds.append(reader)
        chunks = []
        while chunk := os.read(reader, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        for fd in reversed(fds):
            os.close(fd)
        b.cleanup()
        assert set(os.listdir("/proc/self/fd")) == open_before, "an fd was left open"


def _comm_in_proc(tgid: int, pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{tgid}/task/{pid}/comm").read_bytes().rstrip(b"\n")
    except FileNotFoundError:
        return None


def _check_task_records(data: bytes) -> None:
    assert data, "the iterator wrote nothing"
    assert len(data) % TASK_RECORD.size == 0
    records = list(TASK_RECORD.iter_unpack(data))
    seen = 0
    for pid, tgid, comm in records:
        in_proc = _comm_in_proc(tgid, pid)
        if in_proc is None:
            continue  # exited since the walk, or pid/tgid wrong: the counts below tell
        seen += 1
        # /proc adds a workqueue's name to its kworker's comm ("kworker/0:0H-events").
        assert comm.rstrip(b"\0"), (pid, tgid)
        assert in_proc.startswith(comm.rstrip(b"\0")), (pid, tgid, comm, in_proc)
    # Wrong offsets would put nearly every (tgid, pid) pair outside /proc.
    assert seen >= 0.9 * len(records)
    me = os.getpid()
    assert (me, me, _comm_in_proc(me, me)) in {(p, t, c.rstrip(b"\0")) for p, t, c in records}


def test_example_iter_tasks_gadget_reads_pid_tgid_comm(root: None) -> None:
    # examples/iter_tasks.c writes each task's pid, tgid and comm with bpf_seq_write.
    gadget = (EXAMPLES / "iter_tasks.c").read_text()
    _check_task_records(_run_iterator(gadget, "list_tasks", "task"))


TCP_RECORD = struct.Struct("<HBxHHII")
TCP_GADGET = """
struct rec { __u16 family; __u8 state; __u16 num; __u16 dport; __u32 rcv_saddr; __u32 uid; };

int dump_tcp(struct bpf_iter__tcp *ctx)
{
    struct sock_common__btf *sk = ctx->sk_common;
    struct rec r = {};

    if (!sk)
        return 0;
    r.family = sk->skc_family;
    r.state = sk->skc_state;
    r.num = sk->skc_num;
    r.dport = sk->skc_dport;
    r.rcv_saddr = sk->skc_rcv_saddr;
    r.uid = ctx->uid;
    bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
    return 0;
}
"""
TCP_LISTEN = 10
TCP_ESTABLISHED = 1


def test_tcp_iterator_reads_sock_common(root: None) -> None:
    loopback = int.from_bytes(socket.inet_aton("127.0.0.1"), "little")
    with (
        socket.create_server(("127.0.0.1", 0)) as server,
        socket.create_connection(server.getsockname()) as client,
    ):
        port = server.getsockname()[1]
        client_port = client.getsockname()[1]
        data = _run_iterator(TCP_GADGET, "dump_tcp", "tcp")
    assert len(data) % TCP_RECORD.size == 0
    records = set(TCP_RECORD.iter_unpack(data))
    assert (socket.AF_INET, TCP_LISTEN, port, 0, loopback, 0) in records
    dport = socket.htons(port)
    assert (socket.AF_INET, TCP_ESTABLISHED, client_port, dport, loopback, 0) in records


UDP_RECORD = struct.Struct("<HHI")
UDP_GADGET = """
struct rec { __u16 family; __u16 num; __u32 rcv_saddr; };

int dump_udp(struct bpf_iter__udp *ctx)
{
    struct udp_sock__btf *udp = ctx->udp_sk;
    struct rec r = {};

    if (!udp)
        return 0;
    r.family = udp->inet.sk.__sk_common.skc_family;
    r.num = udp->inet.sk.__sk_common.skc_num;
    r.rcv_saddr = udp->inet.sk.__sk_common.skc_rcv_saddr;
    bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
    return 0;
}
"""


def test_udp_iterator_reaches_sock_common_through_udp_sock(root: None) -> None:
    loopback = int.from_bytes(socket.inet_aton("127.0.0.1"), "little")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        data = _run_iterator(UDP_GADGET, "dump_udp", "udp")
    assert (socket.AF_INET, port, loopback) in set(UDP_RECORD.iter_unpack(data))


def _offsets(btf: Btf, t: BtfType, prefix: str, base: int) -> Iterator[tuple[str, int]]:
    """(member designator, byte offset) for every byte-addressable member, nested ones too."""
    for m in t.members:
        member = btf.resolve(m.type_id)
        if m.bitfield_size or m.bit_offset % 8:
            continue
        if member.kind is Kind.INT and member.int_bits != member.size * 8:
            continue
        offset = base + m.bit_offset // 8
        if not m.name:
            yield from _offsets(btf, member, prefix, offset)
            continue
        yield prefix + m.name, offset
        if member.kind in {Kind.STRUCT, Kind.UNION}:
            yield from _offsets(btf, member, f"{prefix}{m.name}.", offset)


@pytest.mark.parametrize("name", ["task_struct", "tcp_sock", "udp_sock", "mm_struct"])
def test_compiled_offsets_equal_btf_for_every_member(root: None, name: str) -> None:
    btf = Btf.from_file()
    (t,) = [t for t in btf.named(name) if t.kind is Kind.STRUCT]
    checks = [f'_Static_assert(sizeof(struct {name}__btf) == {t.size}, "sizeof");']
    checks += [
        f"_Static_assert(__builtin_offsetof(struct {name}__btf, {designator}) == {offset},"
        f' "{designator}");'
        for designator, offset in _offsets(btf, t, "", 0)
    ]
    assert len(checks) > 20
    # A wrong offset fails the compile and bcc raises, naming the member in the message.
    b = _compile("\n".join(checks) + "\nint f(void *ctx) { return 0; }\n")
    b.cleanup()
