"""Static programs on this machine's kernel (6.18), through open_engine, real bcc, real events.

Here: tracepoint, raw_tp, uprobe, uretprobe, USDT (with a semaphore, for a process started
before the engine and one started after) and iter/task. kprobe/kretprobe/fentry/fexit/lsm are
refused by this kernel: asserted reported so (test_static_programs_vm.py runs them in the VM).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from engine.attach.probes import attach_uprobe, attach_usdt
from engine.bcc.loader import load_gadget
from engine.engine import open_engine
from engine.errors import TargetNotFoundError, UnsupportedProgramError
from engine.gadget.model import Gadget
from tests.integration.static_helpers import collect_until, events
from tests.support.constants import EXAMPLES
from tests.support.requirements import unavailable

pytestmark = pytest.mark.integration

PYTHON = "/usr/bin/python3.11"
HOST_EXAMPLES = ["execsnoop.c", "rawtp_sched.c", "getaddrinfo_uprobe.c", "python_usdt.c"]

# Typed records through the prelude's ITER_OUTPUT, and text lines through bpf_seq_printf;
# optional programs of kinds this kernel refuses are skipped, not fatal.
ITERATORS = """\
struct task_rec {
    u32 tid;
    u32 tgid;
    char comm[16];
};

BPF_PERF_OUTPUT(tasks);

SEC("iter/task")
int typed_tasks(struct bpf_iter__task *ctx)
{
    struct task_struct__btf *task = ctx->task;
    struct task_rec rec = {};
    if (!task)
        return 0;
    rec.tid = task->pid;
    rec.tgid = task->tgid;
    bpf_probe_read_kernel_str(rec.comm, sizeof(rec.comm), task->comm);
    ITER_OUTPUT(tasks, ctx, &rec);
    return 0;
}

SEC("iter/task")
int text_tasks(struct bpf_iter__task *ctx)
{
    struct task_struct__btf *task = ctx->task;
    char fmt[] = "leader %d\\n";
    u64 args[1];
    if (!task || task->pid != task->tgid)
        return 0;
    args[0] = task->tgid;
    bpf_seq_printf(ctx->meta->seq, fmt, sizeof(fmt), args, sizeof(args));
    return 0;
}

SEC("?kprobe/do_sys_openat2")
int maybe_kprobe(struct pt_regs *ctx)
{
    return 0;
}

SEC("?fentry/do_unlinkat")
int maybe_fentry(u64 *ctx)
{
    return 0;
}
"""

# CPython 3.11 fires function__entry only on its tracing path, taken while a profile or trace
# function is set; its fast path skips the probe.
BEFORE = """\
import sys, time
def engine_marker_before(x):
    return x
sys.setprofile(lambda *args: None)
print("ready", flush=True)
while True:
    list(map(engine_marker_before, [1]))
    time.sleep(0.05)
"""

AFTER = """\
import socket, sys
def engine_marker_after(x):
    return x
sys.setprofile(lambda *args: None)
list(map(engine_marker_after, [1]))
sys.setprofile(None)
socket.getaddrinfo("localhost", 80)
"""


@pytest.fixture
def python311(root: None) -> None:
    if not Path(PYTHON).exists():
        pytest.fail(f"{PYTHON} (with its USDT probes) is part of this machine's setup")


@pytest.fixture
def before_process(python311: None) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([PYTHON, "-c", BEFORE], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline() == "ready\n"
        yield proc
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


@pytest.fixture
def host_kernel(root: None) -> None:
    """These expectations describe the 6.18 test machine, which refuses these kinds."""
    if not os.uname().release.startswith("6.18."):
        unavailable(f"expectations are for the 6.18 test kernel, this is {os.uname().release}")


def _gadgets() -> list[Gadget]:
    return [Gadget.from_file(EXAMPLES / name) for name in HOST_EXAMPLES] + [
        Gadget.from_source(ITERATORS, "iterators.c")
    ]


def _perf_event_fds() -> int:
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir() if _link(fd) == "anon_inode:[perf_event]")


def _link(fd: Path) -> str:
    try:
        return os.readlink(fd)
    except OSError:
        return ""


def _proc_tasks(pid: int) -> dict[int, str]:
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        out[int(task.name)] = (task / "comm").read_text().strip()
    return out


async def test_host_kinds_see_real_events(
    host_kernel: None, before_process: subprocess.Popen[str]
) -> None:
    gadgets = _gadgets()
    perf_fds = _perf_event_fds()
    opened = f"/tmp/engine-static-{os.getpid()}"
    with trio.fail_after(90):
        async with open_engine(*gadgets, containers=False, iter_interval=0.5) as engine:
            # One perf event per tracepoint, uprobe, uretprobe and USDT location; none for the
            # perf buffer "tasks" (one per CPU), which only types the iterator's records.
            assert _perf_event_fds() - perf_fds == 4
            after = await trio.lowlevel.open_process(
                [PYTHON, "-c", AFTER + f"open({opened!r}, 'w')\n"]
            )
            assert await after.wait() == 0
            pids = {"before": before_process.pid, "after": after.pid}

            def done(seen: list[dict[str, Any]]) -> bool:
                calls = {(c["pid"], c["function"]) for c in events(seen, "calls")}
                runs = [e for e in events(seen, "tasks") if e["tid"] == pids["before"]]
                return (
                    (pids["before"], "engine_marker_before") in calls
                    and (pids["after"], "engine_marker_after") in calls
                    and any(e["pid"] == pids["after"] for e in events(seen, "lookups"))
                    and any(e["pid"] == pids["after"] for e in events(seen, "execs"))
                    and any(e["pid"] == pids["after"] for e in events(seen, "events"))
                    and len(runs) >= 2
                )

            seen = await collect_until(engine, done, 30)
            proc_tasks = _proc_tasks(before_process.pid)

    skipped = {(r["program"], r["kind"]) for r in seen if r["type"] == "program_skipped"}
    assert skipped == {("maybe_kprobe", "kprobe"), ("maybe_fentry", "fentry")}
    attached = {(r["program"], r["kind"]) for r in seen if r["type"] == "attached"}
    assert {
        ("trace_execve", "tracepoint"),
        ("on_exec", "raw_tracepoint"),
        ("lookup_start", "uprobe"),
        ("lookup_done", "uretprobe"),
        ("on_python_call", "usdt"),
        ("typed_tasks", "iter"),
        ("text_tasks", "iter"),
    } <= attached

    # tracepoint (execsnoop) and raw tracepoint: the exec of the process started afterwards.
    (execve,) = [e for e in events(seen, "events") if e["pid"] == pids["after"]]
    assert execve["filename"] == PYTHON
    (exec_done,) = [e for e in events(seen, "execs") if e["pid"] == pids["after"]]
    assert exec_done == {
        "pid": pids["after"],
        "old_pid": pids["after"],
        "comm": "python3.11",
        "filename": PYTHON,
    }
    # uprobe + uretprobe on libc's getaddrinfo: the host name and the return code.
    (lookup,) = [e for e in events(seen, "lookups") if e["pid"] == pids["after"]]
    assert lookup == {"pid": pids["after"], "ret": 0, "comm": "python3.11", "host": "localhost"}
    # USDT with a semaphore: both processes, their own function names and line numbers.
    calls = [c for c in events(seen, "calls") if c["function"].startswith("engine_marker")]
    assert {(c["file"], c["line"]) for c in calls} == {("<string>", 2)}

    # iter/task: at start and on the interval, typed; our process's threads as /proc says.
    typed = events(seen, "tasks")
    mine = {e["tid"]: e["comm"] for e in typed if e["tgid"] == before_process.pid}
    assert mine == proc_tasks
    assert all(set(e) == {"tid", "tgid", "comm"} for e in typed)
    lines = events(seen, "text_tasks")
    assert {"line": f"leader {before_process.pid}"} in lines


async def test_iterators_run_at_start_and_on_demand(before_process: subprocess.Popen[str]) -> None:
    gadget = Gadget.from_source(ITERATORS, "iterators.c")

    def walks() -> int:
        queued = [r.to_json() for r in engine.leftover()]
        return sum(1 for e in events(queued, "tasks") if e["tid"] == before_process.pid)

    with trio.fail_after(60):
        async with open_engine(gadget, containers=False, iter_interval=3600) as engine:
            # The first walk is done before open_engine returns.
            assert walks() == 1
            # On demand: the walk is complete, and delivered, when run_iterators returns.
            await engine.run_iterators()
            assert walks() == 1
            await engine.run_iterators()
            await engine.run_iterators()
            assert walks() == 2


async def test_unavailable_kinds_are_refused_before_compiling(host_kernel: None) -> None:
    refused = {
        "kprobe/do_sys_openat2": "kprobes are not built into this kernel (CONFIG_KPROBES)",
        "kretprobe/do_sys_openat2": "kprobes are not built into this kernel (CONFIG_KPROBES)",
        "fentry/do_unlinkat": "(EPERM)",
        "fexit/do_unlinkat": "(EPERM)",
        "lsm/file_open": "(EPERM)",
    }
    for section, reason in refused.items():
        gadget = Gadget.from_source(f'SEC("{section}")\nint prog(u64 *ctx) {{ return 0; }}\n')
        with trio.fail_after(10), pytest.raises(UnsupportedProgramError) as raised:
            async with open_engine(gadget, containers=False):
                pytest.fail("a refused kind was attached")
        assert raised.value.kind == section.split("/")[0]
        assert reason in raised.value.reason, raised.value.reason
        assert raised.value.line == 1


BAD_TARGETS = {
    'SEC("tracepoint/syscalls/sys_enter_nope")': "no tracepoint syscalls/sys_enter_nope",
    'SEC("raw_tp/no_such_event")': "no raw tracepoint 'no_such_event'",
    'SEC("uprobe/libc:no_such_function")': "no function symbol 'no_such_function' in /",
    'SEC("uretprobe/libnosuchlib:malloc")': "no library 'libnosuchlib' in the dynamic linker",
    'SEC("uprobe//no/such/file:main")': "no file /no/such/file",
    'SEC("usdt//usr/bin/python3.11:python:no_such_probe")': "no USDT probe python:no_such_probe",
    'SEC("kprobe/no_such_kernel_function")': "no kernel function 'no_such_kernel_function'",
    'SEC("fentry/no_such_kernel_function")': "no kernel function 'no_such_kernel_function'",
    'SEC("lsm/no_such_hook")': "no LSM hook 'no_such_hook'",
}


@pytest.mark.parametrize("section", sorted(BAD_TARGETS))
async def test_bad_target_gives_one_clear_error(root: None, section: str) -> None:
    gadget = Gadget.from_source(f"\n{section}\nint prog(struct pt_regs *ctx) {{ return 0; }}\n")

    def everything(_kind: object) -> tuple[bool, str]:
        # Past the feature check, so that kinds this kernel refuses reach the target check.
        return True, ""

    with trio.fail_after(20), pytest.raises(TargetNotFoundError) as raised:
        async with open_engine(gadget, containers=False, supported=everything):
            pytest.fail("attached to a target that does not exist")
    assert BAD_TARGETS[section] in str(raised.value)
    assert raised.value.line == 2
    assert raised.value.function == "prog"


async def test_cancelled_while_attaching_leaves_nothing(python311: None) -> None:
    gadget = Gadget.from_file(EXAMPLES / "python_usdt.c")
    uprobes = Gadget.from_file(EXAMPLES / "getaddrinfo_uprobe.c")
    loaded = await load_gadget(uprobes)
    usdt = await load_gadget(gadget)
    perf_fds = _perf_event_fds()
    try:
        with trio.CancelScope() as scope:
            async with attach_uprobe(loaded, loaded.program("lookup_start")):
                assert _perf_event_fds() == perf_fds + 1
                # Cancelled between two attaches: the next one never attaches, the first
                # detaches.
                scope.cancel()
                async with attach_usdt(usdt, usdt.program("on_python_call")):
                    pytest.fail("attached after cancellation")
        assert scope.cancelled_caught
        assert _perf_event_fds() == perf_fds
    finally:
        loaded.close()
        usdt.close()
