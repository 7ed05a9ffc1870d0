"""Inside the Debian 6.1 VM (its own headers): bcc's naming conventions for the kinds this
machine's kernel refuses (kprobe__, kretprobe__, KFUNC_PROBE, KRETFUNC_PROBE, LSM_PROBE), and
tcpstates' kprobe variant, unchanged, against a loopback connection the test makes. With
matching headers the gadgets are compiled as written. One engine for both keeps the compiles
(slow under emulation) at two. Run by tests/vm/test_debian_kernel.py.
"""

from __future__ import annotations

import os
import socket
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import trio

from engine.bcc.loader import full_source
from engine.engine import open_engine
from engine.gadget.model import Gadget
from engine.kernel.headers import process_headers
from tests.integration.static_helpers import collect_until, events
from tests.support import bcc_tools

pytestmark = [pytest.mark.integration, pytest.mark.vmkernel]

CLOSE, SYN_SENT, ESTABLISHED, FIN_WAIT1, FIN_WAIT2 = 7, 2, 1, 4, 5
GETPPIDS = 5
# The client's side of the test's connection, in order.
TRANSITIONS = [
    (CLOSE, SYN_SENT),
    (SYN_SENT, ESTABLISHED),
    (ESTABLISHED, FIN_WAIT1),
    (FIN_WAIT1, FIN_WAIT2),
    (FIN_WAIT2, CLOSE),
]

NAMED = """\
#include <uapi/linux/ptrace.h>
#include <linux/fs.h>

struct hit {
    u32 tid;
    u32 by;
};

BPF_PERF_OUTPUT(hits);

static __always_inline int seen(void *ctx, u32 by)
{
    u64 id = bpf_get_current_pid_tgid();
    if (id >> 32 != MINE)  /* the test's process only: the rest of the VM would flood */
        return 0;
    struct hit h = {(u32)id, by};
    hits.perf_submit(ctx, &h, sizeof(h));
    return 0;
}

int kprobe__do_sys_openat2(struct pt_regs *ctx) { return seen(ctx, 1); }
int kretprobe__do_sys_openat2(struct pt_regs *ctx) { return seen(ctx, 2); }

SEC("kprobe/do_sys_openat2")
int also_open(struct pt_regs *ctx) { return seen(ctx, 3); }

KFUNC_PROBE(do_unlinkat, int dfd, struct filename *name) { return seen(ctx, 4); }
KRETFUNC_PROBE(do_unlinkat, int dfd, struct filename *name, long ret) { return seen(ctx, 5); }

LSM_PROBE(file_open, struct file *file)
{
    seen(ctx, 6);
    return 0;
}

int kprobe__sys_getppid(struct pt_regs *ctx) { return seen(ctx, 7); }
"""


def _work(path: Path, done: list[tuple[int, int, int]]) -> None:
    """One open, one unlink and getppid calls; then a loopback connection closed by the
    client. Appends (this thread's id, the server's port, the client's port) to ``done``."""
    path.write_text("x")
    path.unlink()
    for _ in range(GETPPIDS):
        os.getppid()
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        ports = server.getsockname()[1], client.getsockname()[1]
        client.close()
        accepted.recv(1)
        accepted.close()
    done.append((threading.get_native_id(), *ports))


async def _in_a_thread_of_its_own(path: Path) -> tuple[int, int, int]:
    """``_work`` in a new thread: no other code ever runs on its thread id."""
    done: list[tuple[int, int, int]] = []
    thread = threading.Thread(target=_work, args=(path, done))
    thread.start()
    await trio.to_thread.run_sync(thread.join)
    (result,) = done
    return result


async def test_named_kprobes_trampolines_lsm_and_tcpstates(root: None, tmp_path: Path) -> None:
    assert process_headers().matches, "the VM compiles against its own kernel's headers"
    tcpstates = Gadget.from_source(bcc_tools.tcpstates(kprobe=True).text(), "tcpstates.c")
    # Matching headers: the gadget goes to bcc as written (no true-layout rewrite).
    assert full_source(tcpstates).endswith('#line 1 "tcpstates.c"\n' + tcpstates.source)
    named = Gadget.from_source(f"#define MINE {os.getpid()}\n" + NAMED, "named.c")
    # Compiled and attached in this order: nothing reads the records until all are (tcpstates
    # writes few before the test's connection).
    with trio.fail_after(500):
        async with open_engine(tcpstates, named, containers=False) as engine:
            me, server, client = await _in_a_thread_of_its_own(tmp_path / "named.txt")

            def client_states(seen: list[dict[str, Any]]) -> list[tuple[int, int]]:
                found = [e for e in events(seen, "ipv4_events") if e["ports"] & 0xFFFF == server]
                ordered = sorted(found, key=lambda e: e["ts_us"])
                return [(e["oldstate"], e["newstate"]) for e in ordered]

            def done(seen: list[dict[str, Any]]) -> bool:
                # Every transition, not only the last: each CPU has a perf buffer of its own,
                # and the connect's records may be read after the close's (the VM has two).
                ours = {e["by"] for e in events(seen, "hits") if e["tid"] == me}
                return ours == set(range(1, 8)) and set(client_states(seen)) >= set(TRANSITIONS)

            seen = await collect_until(engine, done, 120)
    attached = {(r["program"], r["kind"], r["target"]) for r in seen if r["type"] == "attached"}
    assert attached == {
        ("kprobe__do_sys_openat2", "kprobe", "do_sys_openat2"),
        ("kretprobe__do_sys_openat2", "kretprobe", "do_sys_openat2"),
        ("also_open", "kprobe", "do_sys_openat2"),
        ("kfunc__do_unlinkat", "fentry", "do_unlinkat"),
        ("kretfunc__do_unlinkat", "fexit", "do_unlinkat"),
        ("lsm__file_open", "lsm", "file_open"),
        ("kprobe__sys_getppid", "kprobe", "__x64_sys_getppid"),
        ("kprobe__tcp_set_state", "kprobe", "tcp_set_state"),
    }
    by = Counter(e["by"] for e in events(seen, "hits") if e["tid"] == me)
    # One open, seen once by each of the two kprobes on the function (each attached once)
    # and the kretprobe; one unlink; every getppid. The LSM hook runs for the open too (6.1
    # calls file_open more than once for one open(2)).
    assert by.pop(6) >= 1
    assert by == {1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 7: GETPPIDS}
    assert client_states(seen) == TRANSITIONS
    (client_ports,) = {
        e["ports"] for e in events(seen, "ipv4_events") if e["ports"] >> 16 == client
    }
    assert client_ports == (client << 16) + server
