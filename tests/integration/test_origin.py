"""Every record knows its container, and the selection holds, with gadgets that use no engine
helper and write no attribution field (docs/events.md, "Origin"). Real kernel, real Docker.

The exec gadget reports only processes whose name starts with ``engorig-``: each test execs
such processes (busybox or /bin/true under a link of that name, which exit at once) in its
containers and on the host, so that every count is exact whatever else runs on the machine.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
import trio

import engine
from engine.bcc.loader import load_sync
from engine.engine import Engine
from engine.errors import CompileError
from engine.events.stats import MapStats
from engine.gadget.model import Gadget
from tests.support.docker import Containers
from tests.support.recorder import Recorder, recording

pytestmark = [pytest.mark.integration, pytest.mark.docker]

PREFIX = "engorig-"
EXECS = r"""
struct exec_t { u32 pid; char comm[16]; };
BPF_RINGBUF_OUTPUT(execs, 64);

SEC("tracepoint/sched/sched_process_exec")
int on_exec(void *ctx)
{
    struct exec_t e = {.pid = bpf_get_current_pid_tgid() >> 32};
    bpf_get_current_comm(&e.comm, sizeof(e.comm));
    if (e.comm[0] != 'e' || e.comm[1] != 'n' || e.comm[2] != 'g' || e.comm[3] != 'o' ||
        e.comm[4] != 'r' || e.comm[5] != 'i' || e.comm[6] != 'g' || e.comm[7] != '-')
        return 0;
    execs.ringbuf_output(&e, sizeof(e), 0);
    return 0;
}
"""


def in_container(*names: str) -> str:
    """A shell command running busybox as each of ``names`` (it exits at once: no applet)."""
    return "; ".join(f"ln -sf /bin/busybox /tmp/{n} && /tmp/{n} 2>/dev/null" for n in names)


async def exec_in(containers: Containers, name: str, *programs: str) -> None:
    await containers.exec(name, "sh", "-c", in_container(*programs) + "; true")


async def exec_on_host(*programs: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        for program in programs:
            link = Path(folder) / program
            link.symlink_to("/bin/true")
            await trio.run_process([str(link)])


def execs_by_name(rec: Recorder) -> Counter[tuple[str, str | None]]:
    """(process name, container name) of every exec event delivered."""
    return Counter(
        (e["data"]["comm"], e["container"]["name"] if e["container"] else None)
        for e in rec.events("execs")
    )


def stats(eng: Engine) -> MapStats:
    return eng.stats.for_map("execs_gadget", "execs")


async def counted(eng: Engine, refused: int) -> None:
    """Until the kernel's refusals are counted: counts make no record to wait on, and the
    engine reads them once a second, so they are looked at every 0.1 s."""
    for _ in range(100):
        if stats(eng).unselected_kernel >= refused:
            return
        await trio.sleep(0.1)
    raise AssertionError(f"{refused} refusals not counted within 10 s: {stats(eng)}")


def open_execs(
    select: Sequence[str] = (), *, host: bool = False
) -> AbstractAsyncContextManager[Engine]:
    gadget = Gadget.from_source(EXECS, "execs_gadget.c")
    return engine.open_engine(gadget, select=select, host=host, iter_interval=3600)


async def test_execs_of_the_selected_containers_only_named_and_the_rest_refused_in_the_kernel(
    containers: Containers,
) -> None:
    before = containers.start("sel-before")
    other = containers.start("other")
    after = containers.name("sel-after")
    entry = in_container(f"{PREFIX}a1", f"{PREFIX}a2") + "; exec sleep 300"
    wanted = Counter(
        {
            (f"{PREFIX}b1", before): 1,
            (f"{PREFIX}b2", before): 1,
            (f"{PREFIX}a1", after): 1,  # the entrypoint's, before Docker reported the container
            (f"{PREFIX}a2", after): 1,
        }
    )
    refused = 5  # three in the unselected container, two on the host
    with trio.fail_after(90):
        async with (
            open_execs(select=[f"name={containers.name('sel-*')}"]) as eng,
            recording(eng) as rec,
        ):
            await containers.run("sel-after", "sh", "-c", entry)
            await exec_in(containers, before, f"{PREFIX}b1", f"{PREFIX}b2")
            await exec_in(containers, other, f"{PREFIX}o1", f"{PREFIX}o2", f"{PREFIX}o3")
            await exec_on_host(f"{PREFIX}h1", f"{PREFIX}h2")
            await rec.until(lambda: execs_by_name(rec) == wanted, 30, lambda: f"{wanted}")
            await counted(eng, refused)
            await exec_in(containers, after, f"{PREFIX}a3")
            # The kernel's counts are read before a record is handed on: with a3's record,
            # the refusals written before it are counted.
            await rec.until(lambda: execs_by_name(rec).total() == 5, 30, "the last exec")
            assert stats(eng).unselected_kernel == refused
    wanted[(f"{PREFIX}a3", after)] = 1  # once Docker had reported it
    assert execs_by_name(rec) == wanted
    counts = stats(eng)
    # The unselected container's and the host's never reached Python: refused in the kernel.
    assert counts.unselected_kernel == refused
    assert counts.unselected == refused
    assert counts.received == counts.delivered == 5
    for event in rec.events("execs"):
        assert set(event["origin"]) == {"mntns", "netns", "cgroup", "tgid"}
        assert event["origin"]["tgid"] == event["data"]["pid"]


async def test_with_host_the_hosts_execs_come_too_with_no_container(
    containers: Containers,
) -> None:
    chosen = containers.start("chosen")
    other = containers.start("other")
    host_mntns = os.stat("/proc/self/ns/mnt").st_ino
    with trio.fail_after(60):
        async with (
            open_execs(select=[f"name={chosen}"], host=True) as eng,
            recording(eng) as rec,
        ):
            await exec_in(containers, chosen, f"{PREFIX}c1")
            await exec_in(containers, other, f"{PREFIX}o1")
            await exec_on_host(f"{PREFIX}h1")
            await rec.until(lambda: execs_by_name(rec).total() == 2, 30, "two execs")
            await counted(eng, 1)
    assert execs_by_name(rec) == Counter({(f"{PREFIX}c1", chosen): 1, (f"{PREFIX}h1", None): 1})
    [host] = [e for e in rec.events("execs") if e["container"] is None]
    assert host["origin"]["mntns"] == host_mntns
    assert stats(eng).unselected_kernel == 1


async def test_with_no_selection_everything_comes_named(containers: Containers) -> None:
    first = containers.start("first")
    with trio.fail_after(60):
        async with open_execs() as eng, recording(eng) as rec:
            entry = in_container(f"{PREFIX}s1") + "; exec sleep 300"
            second = await containers.run("second", "sh", "-c", entry)
            await exec_in(containers, first, f"{PREFIX}f1")
            await exec_on_host(f"{PREFIX}h1")
            await rec.until(lambda: execs_by_name(rec).total() == 3, 30, "three execs")
            # Without a selection nothing is held: the entrypoint's exec may come before Docker
            # reported its container; once it has, the engine names it.
            await rec.until(
                lambda: second in {r["container"]["name"] for r in rec.of_type("container_added")},
                30,
                "the second container reported",
            )
            await exec_in(containers, second, f"{PREFIX}s2")
            await rec.until(lambda: execs_by_name(rec).total() == 4, 30, "four execs")
    named = execs_by_name(rec)
    assert named[(f"{PREFIX}f1", first)] == 1
    assert named[(f"{PREFIX}s2", second)] == 1
    assert named[(f"{PREFIX}h1", None)] == 1
    assert sum(n for (comm, _), n in named.items() if comm == f"{PREFIX}s1") == 1
    assert stats(eng).unselected == 0


def test_a_compile_error_in_a_rewritten_write_points_at_the_users_line() -> None:
    """bcc compiles the rewritten text; its messages name the gadget's file and lines."""
    source = EXECS.replace(
        "execs.ringbuf_output(&e, sizeof(e), 0);\n    return 0;",
        "execs.ringbuf_output(&e,\n        sizeof(nope), 0);\n    return nope2;",
    )
    broken = source.splitlines()
    with pytest.raises(CompileError) as raised:
        load_sync(Gadget.from_source(source, "execs_broken.c"))
    lines = str(raised.value).splitlines()
    # Each error once, at the user's line (a call's first line for an error in its
    # arguments: its expansion is written there), that line shown as written.
    first = next(i for i, line in enumerate(broken) if "ringbuf_output(&e," in line) + 1
    second = next(i for i, line in enumerate(broken) if "nope2" in line) + 1
    nope = [line for line in lines if "undeclared identifier 'nope'" in line]
    nope2 = [line for line in lines if "undeclared identifier 'nope2'" in line]
    assert len(nope) == 1 and nope[0].startswith(f"execs_broken.c:{first}:")
    assert len(nope2) == 1 and nope2[0].startswith(f"execs_broken.c:{second}:")
    assert broken[first - 1] in lines
