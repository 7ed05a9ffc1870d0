"""bcc's naming conventions on this kernel: programs named the bcc way, defined by bcc's
macros, mixed with SEC ones, several on one target, each attached exactly once by the engine
(never also by bcc), one left out by the preprocessor."""

from __future__ import annotations

import os
from collections import Counter

import pytest

from engine.engine import open_engine
from engine.gadget.model import Gadget
from tests.integration.static_helpers import collect_until
from tests.support.requirements import require_root

pytestmark = pytest.mark.integration

CALLS = 25
GETPPID = 110  # x86-64

MIXED = f"""\
#include <uapi/linux/ptrace.h>

struct call {{
    u32 pid;
    u32 by;
}};

BPF_PERF_OUTPUT(calls);

static __always_inline int seen(void *ctx, u32 by)
{{
    struct call c = {{bpf_get_current_pid_tgid() >> 32, by}};
    calls.perf_submit(ctx, &c, sizeof(c));
    return 0;
}}

TRACEPOINT_PROBE(syscalls, sys_enter_getppid)
{{
    return seen(args, 1);
}}

SEC("tracepoint/syscalls/sys_enter_getppid")
int by_section(void *ctx)
{{
    return seen(ctx, 2);
}}

SEC("raw_tracepoint/sys_enter")
int raw_tracepoint__sys_enter(struct bpf_raw_tracepoint_args *ctx)
{{
    return ctx->args[1] == {GETPPID} ? seen(ctx, 3) : 0;
}}

RAW_TRACEPOINT_PROBE(sys_exit)
{{
    struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
    long id = 0;
    bpf_probe_read_kernel(&id, sizeof(id), &regs->orig_ax);
    return id == {GETPPID} ? seen(ctx, 4) : 0;
}}

#ifdef NEVER_DEFINED
TRACEPOINT_PROBE(sched, sched_switch)
{{
    return 0;
}}
#endif
"""


async def test_named_programs_attach_once_each() -> None:
    require_root()
    gadget = Gadget.from_source(MIXED, "mixed.c")
    mine = os.getpid()
    async with open_engine(gadget, containers=False) as engine:
        for _ in range(CALLS):
            os.getppid()

        def enough(seen: list[dict[str, object]]) -> bool:
            return sum(1 for r in seen if r["type"] == "event") >= 4 * CALLS

        seen = await collect_until(engine, enough, 20)
        # Anything a second attachment would have written comes now.
        seen += await collect_until(engine, lambda _: False, 0.5)
    attached = sorted(
        (r["program"], r["kind"], r["target"]) for r in seen if r["type"] == "attached"
    )
    assert attached == [
        ("by_section", "tracepoint", "syscalls/sys_enter_getppid"),
        ("raw_tracepoint__sys_enter", "raw_tracepoint", "sys_enter"),
        ("raw_tracepoint__sys_exit", "raw_tracepoint", "sys_exit"),
        ("tracepoint__syscalls__sys_enter_getppid", "tracepoint", "syscalls/sys_enter_getppid"),
    ]
    skipped = [r for r in seen if r["type"] == "program_skipped"]
    assert [(r["program"], r["reason"]) for r in skipped] == [
        (
            "tracepoint__sched__sched_switch",
            "not compiled: the preprocessor left its definition out (#if/#ifdef)",
        )
    ]
    by = Counter(r["data"]["by"] for r in seen if r["type"] == "event" and r["data"]["pid"] == mine)
    assert by == {1: CALLS, 2: CALLS, 3: CALLS, 4: CALLS}
