"""`engine run` stopped by SIGTERM, SIGINT and SIGKILL while containers start and its
classifiers are being attached.

After SIGTERM/SIGINT nothing of the process remains: no tc filter named after it, none of its
BPF programs, no tracefs probe. After SIGKILL its filters (and the programs they hold) remain
until the next engine starts, which removes them, and only them: another tool's filter on the
same veth survives.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.conftest import EXAMPLES
from tests.faults.kernel_state import (
    EngineProcess,
    arun,
    bpf_programs,
    container_name,
    engine_process,
    filters_of,
    remove_containers,
    renamed_gadget,
    start_container,
    tag,
    tracefs_probes,
)

pytestmark = [pytest.mark.integration, pytest.mark.docker]


PROGRAMS: set[str] = set()


@pytest.fixture
def gadgets(docker_daemon: None, tmp_path: Path) -> Iterator[list[str]]:
    """The example classifiers and execsnoop with program names unique to this test (their
    names are in PROGRAMS while it runs)."""
    t = tag()
    renames = {"into_container": f"fin_{t}", "out_of_container": f"fout_{t}"}
    tc = renamed_gadget(EXAMPLES / "tc_bytes.c", tmp_path, renames)
    exe = renamed_gadget(EXAMPLES / "execsnoop.c", tmp_path, {"trace_execve": f"fexe_{t}"})
    PROGRAMS.update([*renames.values(), f"fexe_{t}"])
    yield [str(tc), str(exe)]
    PROGRAMS.clear()


@pytest.fixture
def names() -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    remove_containers(made)


def our_programs() -> set[int]:
    """Ids of the loaded BPF programs of this test's gadgets."""
    return {i for i, name in bpf_programs().items() if name in PROGRAMS}


async def churn(names: list[str], count: int) -> None:
    for _ in range(count):
        name = container_name("churn")
        names.append(name)
        await trio.to_thread.run_sync(start_container, name)


def attached_per_netns(engine: EngineProcess) -> int:
    return sum(1 for r in engine.of_type("attached") if r.get("netns") is not None)


async def _run_and_stop(gadgets: list[str], names: list[str], signum: int) -> EngineProcess:
    """Start the engine, start containers, and signal it while attaches are under way."""
    async with engine_process(*gadgets) as engine, trio.open_nursery() as nursery:
        await engine.wait_until(lambda e: any("attached 1 program" in s for s in e.stderr))
        nursery.start_soon(churn, names, 4)
        start = attached_per_netns(engine)
        await engine.wait_until(lambda e: attached_per_netns(e) >= start + 2)
        engine.process.send_signal(signum)
        with trio.fail_after(15):
            await engine.process.wait()
        nursery.cancel_scope.cancel()
    return engine


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_graceful_signal_leaves_nothing(
    gadgets: list[str], names: list[str], signum: signal.Signals
) -> None:
    before = our_programs()
    with trio.fail_after(120):
        engine = await _run_and_stop(gadgets, names, signum)
    assert engine.process.returncode == 0, engine.stderr
    assert any(f"stopped ({signum.name})" in line for line in engine.stderr), engine.stderr
    assert not any("Traceback" in line for line in engine.stderr), engine.stderr
    assert filters_of(engine.pid) == []
    assert our_programs() == before
    assert tracefs_probes(f"bcc_{engine.pid}") == []
    attached = [r for r in engine.of_type("attached") if r.get("netns") is not None]
    detached = engine.of_type("detached")
    key = ("program", "netns", "interface")
    assert sorted(tuple(r[k] for k in key) for r in attached) == sorted(
        tuple(r[k] for k in key) for r in detached
    )


async def test_sigkill_leftovers_removed_by_the_next_start_and_only_ours(
    gadgets: list[str], names: list[str]
) -> None:
    with trio.fail_after(120):
        killed = await _run_and_stop(gadgets, names, signal.SIGKILL)
    assert killed.process.returncode == -signal.SIGKILL
    left = filters_of(killed.pid)
    assert left, "a SIGKILLed engine cannot remove its filters: they should be there"
    held = our_programs()
    assert held, "its filters hold its classifiers loaded"
    # Another tool's filter on one of those veths, at a priority of its own.
    dev = left[0].split()[0]
    await arun(
        "tc", "filter", "add", "dev", dev, "ingress", "prio", "7", "u32", "match", "u32", "0",
        "0", "flowid", "1:1",
    )  # fmt: skip
    try:
        with trio.fail_after(60):
            async with engine_process(*gadgets) as again:
                await again.wait_until(lambda e: any("attached 1 program" in s for s in e.stderr))
                assert filters_of(killed.pid) == []
                assert not held & our_programs()
                other = await arun("tc", "filter", "show", "dev", dev, "ingress")
                assert " u32 " in other and "pref 7" in other
                again.process.send_signal(signal.SIGTERM)
                assert await again.process.wait() == 0
        assert filters_of(again.pid) == []
    finally:
        await arun("tc", "filter", "del", "dev", dev, "ingress", "prio", "7", check=False)
