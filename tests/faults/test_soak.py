"""A soak: container start/stop cycles under every example gadget this kernel can run.

ENGINE_SOAK_CYCLES sets the number (30 by default, in the test command; `nox -s soak` runs
1,000). After a warm-up, the process's fds, its BPF programs, maps and links, our tc filters
and tracefs probes are the same after the last cycle as after the warm-up, and RSS grows by
less than a bound that does not scale with the cycle count.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter

import pytest
import trio

from engine import open_engine
from tests.support.constants import EXAMPLES
from tests.support.docker import Containers
from tests.support.kernel_state import KernelState, left_behind, rss_kib
from tests.support.recorder import Recorder, recording, unpaired

pytestmark = [pytest.mark.integration, pytest.mark.docker]

CYCLES = int(os.environ.get("ENGINE_SOAK_CYCLES", "30"))
WARM_UP = 5
# Kinds this kernel refuses (kprobe, fentry, lsm) are left out: see docs/faults.md.
GADGETS = (
    "execsnoop.c",
    "tc_bytes.c",
    "dns.c",
    "listening_tcp.c",
    "iter_tasks.c",
    "rawtp_sched.c",
    "tcpconnect.c",
    "getaddrinfo_uprobe.c",
    "python_usdt.c",
)
RSS_GROWTH_KIB = 32 * 1024
# The docker SDK keeps a connection pool per URL (/containers/<id>/json...), up to 25
# (docker.constants.DEFAULT_NUM_POOLS), each with its socket: bounded, so allowed while the
# engine runs.
DOCKER_SDK_POOLS = Counter({"socket (unix)": 25})


async def test_container_cycles_leave_everything_flat(containers: Containers) -> None:
    failed: list[dict[str, object]] = []
    gadgets = [EXAMPLES / name for name in GADGETS]
    # pytest records every warning it sees; bcc warns on each str table name (a
    # DeprecationWarning per lookup), and that record would grow with every cycle.
    with warnings.catch_warnings(), trio.fail_after(120 + 6 * CYCLES):
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="bcc")
        async with (
            open_engine(*gadgets, select=containers.selection, iter_interval=3600) as eng,
            recording(eng, keep_events=False) as rec,
        ):
            for cycle in range(CYCLES):
                if cycle == WARM_UP:
                    before, rss_before = KernelState.now(), rss_kib()
                name = await _cycle(containers, cycle, rec)
                # Other containers on the machine are traced for a moment, until Docker says
                # they are not selected: their attachments may fail as they come and go. Ours
                # never do. Records are kept per cycle, so that the test's memory stays flat.
                failed += [r for r in rec.of_type("attach_failed") if r["container"] == name]
                rec.records.clear()
            # A detach still finishing in a worker thread holds a netlink socket and an epoll
            # fd for a moment; a leak holds them for good.
            left = await trio.to_thread.run_sync(
                lambda: left_behind(before, allowed_fds=DOCKER_SDK_POOLS)
            )
            rss_after = rss_kib()
    assert not left, str(left)
    assert rss_after - rss_before < RSS_GROWTH_KIB, (rss_before, rss_after)
    assert failed == [], "\n".join(map(str, failed[:5]))


async def test_the_first_container_adds_nothing_the_engine_keeps(containers: Containers) -> None:
    """What the engine keeps for all netns (its tc threads and their sockets, the iterator
    thread and links) exists once it has started: the first container's attach and detach
    leave nothing more behind. Made lazily, they were counted as the soak's leak whenever a
    cycle after the warm-up was the first to need one (a detach finding its veth, a thread
    never used before)."""
    gadgets = [EXAMPLES / "tc_bytes.c", EXAMPLES / "dns.c", EXAMPLES / "listening_tcp.c"]
    with warnings.catch_warnings(), trio.fail_after(120):
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="bcc")
        async with (
            open_engine(*gadgets, select=containers.selection, iter_interval=3600) as eng,
            recording(eng, keep_events=False) as rec,
        ):
            before = KernelState.now()
            await _cycle(containers, 0, rec)
            left = await trio.to_thread.run_sync(
                lambda: left_behind(before, allowed_fds=DOCKER_SDK_POOLS)
            )
    assert not left, str(left)


async def _cycle(containers: Containers, cycle: int, rec: Recorder) -> str:
    """One container: started, every per-netns program attached, removed, all detached."""
    name = containers.name(str(cycle))

    def about(kind: str) -> list[dict[str, object]]:
        return [r for r in rec.of_type(kind) if r.get("container") == name]

    await containers.run(str(cycle))
    # tc_bytes' two classifiers and dns's socket filter (iterators just run).
    await rec.until(lambda: len(about("attached")) >= 3, 30, f"{name} attached")
    await containers.remove(name)
    await rec.until(lambda: not unpaired(rec.records), 30, f"{name} detached")
    return name
