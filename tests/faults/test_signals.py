"""`engine run` stopped by SIGTERM, SIGINT and SIGKILL while containers start and its
classifiers are being attached.

After SIGTERM/SIGINT nothing of the process remains: no tc filter named after it, none of its
BPF programs, no tracefs probe. After SIGKILL its filters (and the programs they hold) remain
until the next engine starts, which removes them, and only them: another tool's filter on the
same veth survives.
"""

from __future__ import annotations

import re
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.support.commands import arun
from tests.support.constants import EXAMPLES
from tests.support.docker import Containers
from tests.support.kernel_state import bpf_programs, filters_of, tracefs_probes
from tests.support.process import EngineProcess, engine_process
from tests.support.recorder import unpaired

pytestmark = [pytest.mark.integration, pytest.mark.docker]


PROGRAMS: set[str] = set()


def renamed_gadget(source: Path, folder: Path, names: dict[str, str]) -> Path:
    """A copy of an example gadget with its functions renamed, so that its programs are told
    apart from other engines' (bpftool shows names cut to 15 characters)."""
    text = source.read_text()
    for old, new in names.items():
        assert len(new) <= 15, new
        text = re.sub(rf"\b{old}\b", new, text)
    path = folder / source.name
    path.write_text(text)
    return path


@pytest.fixture
def gadgets(docker_daemon: None, tmp_path: Path) -> Iterator[list[str]]:
    """The example classifiers and execsnoop with program names unique to this test (their
    names are in PROGRAMS while it runs)."""
    t = uuid.uuid4().hex[:6]
    renames = {"into_container": f"fin_{t}", "out_of_container": f"fout_{t}"}
    tc = renamed_gadget(EXAMPLES / "tc_bytes.c", tmp_path, renames)
    exe = renamed_gadget(EXAMPLES / "execsnoop.c", tmp_path, {"trace_execve": f"fexe_{t}"})
    PROGRAMS.update([*renames.values(), f"fexe_{t}"])
    yield [str(tc), str(exe)]
    PROGRAMS.clear()


def our_programs() -> set[int]:
    """Ids of the loaded BPF programs of this test's gadgets."""
    return {i for i, name in bpf_programs().items() if name in PROGRAMS}


async def churn(containers: Containers, count: int) -> None:
    for i in range(count):
        await containers.run(f"churn-{i}")


def attached_per_netns(engine: EngineProcess) -> int:
    return sum(1 for r in engine.of_type("attached") if r.get("netns") is not None)


async def _run_and_stop(gadgets: list[str], containers: Containers, signum: int) -> EngineProcess:
    """Start the engine, start containers, and signal it while attaches are under way."""
    async with engine_process(*gadgets) as engine, trio.open_nursery() as nursery:
        await engine.line("attached 1 program")
        nursery.start_soon(churn, containers, 4)
        start = attached_per_netns(engine)
        await engine.until(lambda: attached_per_netns(engine) >= start + 2)
        engine.process.send_signal(signum)
        with trio.fail_after(15):
            await engine.process.wait()
        nursery.cancel_scope.cancel()
    return engine


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_graceful_signal_leaves_nothing(
    gadgets: list[str], containers: Containers, signum: signal.Signals
) -> None:
    before = our_programs()
    with trio.fail_after(120):
        engine = await _run_and_stop(gadgets, containers, signum)
    assert engine.process.returncode == 0, engine.stderr
    assert any(f"stopped ({signum.name})" in line for line in engine.stderr), engine.stderr
    assert not any("Traceback" in line for line in engine.stderr), engine.stderr
    assert filters_of(engine.pid) == []
    assert our_programs() == before
    assert tracefs_probes(f"bcc_{engine.pid}") == []
    assert not unpaired(engine.records), unpaired(engine.records)


async def test_sigkill_leftovers_removed_by_the_next_start_and_only_ours(
    gadgets: list[str], containers: Containers
) -> None:
    with trio.fail_after(120):
        killed = await _run_and_stop(gadgets, containers, signal.SIGKILL)
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
                await again.line("attached 1 program")
                assert filters_of(killed.pid) == []
                assert not held & our_programs()
                other = await arun("tc", "filter", "show", "dev", dev, "ingress")
                assert " u32 " in other and "pref 7" in other
                again.process.send_signal(signal.SIGTERM)
                assert await again.process.wait() == 0
        assert filters_of(again.pid) == []
    finally:
        await arun("tc", "filter", "del", "dev", dev, "ingress", "prio", "7", check=False)
