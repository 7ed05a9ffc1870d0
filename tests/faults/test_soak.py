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
from typing import Any

import pytest
import trio

from engine import open_engine
from tests.conftest import EXAMPLES, TEST_IMAGE
from tests.faults.kernel_state import (
    arun,
    fd_targets,
    filters_of,
    own_bpf_objects,
    remove_containers,
    rss_kib,
    tag,
    tracefs_probes,
)

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
DOCKER_API = "socket (unix)"
DOCKER_SDK_POOLS = 25  # docker.constants.DEFAULT_NUM_POOLS


def snapshot() -> dict[str, Any]:
    return {
        "fds": fd_targets(),
        "bpf": own_bpf_objects(),
        "filters": filters_of(os.getpid()),
        "probes": tracefs_probes(f"bcc_{os.getpid()}"),
    }


async def test_container_cycles_leave_everything_flat(docker_daemon: None) -> None:
    prefix = f"engine-test-{tag()}-soak"
    records: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    made: list[str] = []
    gadgets = [EXAMPLES / name for name in GADGETS]
    try:
        # pytest records every warning it sees; bcc warns on each str table name (a
        # DeprecationWarning per lookup), and that record would grow with every cycle.
        with warnings.catch_warnings(), trio.fail_after(120 + 6 * CYCLES):
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="bcc")
            async with (
                open_engine(*gadgets, select=[f"name={prefix}-*"], iter_interval=3600) as eng,
                trio.open_nursery() as nursery,
            ):

                async def collect() -> None:
                    async for record in eng.events():
                        if record.to_json()["type"] != "event":
                            records.append(record.to_json())

                nursery.start_soon(collect)
                for cycle in range(CYCLES):
                    if cycle == WARM_UP:
                        await _settled(eng)
                        before, rss_before = snapshot(), rss_kib()
                    name = f"{prefix}-{cycle}"
                    made.append(name)
                    await _cycle(name, records)
                    # Other containers on the machine are traced for a moment, until Docker
                    # says they are not selected: their attachments may fail as they come and
                    # go. Ours never do. Records are kept per cycle, so that the test's own
                    # memory stays flat.
                    failed += [
                        r
                        for r in records
                        if r["type"] == "attach_failed" and r["container"] == name
                    ]
                    records.clear()
                await _settled(eng)
                after = await _same_as(before)
                rss_after = rss_kib()
                eng.stop()
    finally:
        remove_containers(made)
    assert _grown(before, after) == {}
    assert rss_after - rss_before < RSS_GROWTH_KIB, (rss_before, rss_after)
    assert failed == [], "\n".join(map(str, failed[:5]))
    assert filters_of(os.getpid()) == []


async def _settled(eng: Any) -> None:
    """Until no netns is traced: ours are gone, and any other container's netns traced
    while Docker had not yet said whose it is has been let go."""
    with trio.fail_after(60):
        while eng.per_netns.running:  # noqa: ASYNC110
            await trio.sleep(0.05)


async def _same_as(before: dict[str, Any]) -> dict[str, Any]:
    """A snapshot without growth over ``before``, if one comes within a few seconds: a detach
    still finishing in a worker thread holds a netlink socket and an epoll fd for a moment;
    a leak holds them for good."""
    with trio.move_on_after(5):
        while True:
            after = snapshot()
            if _grown(before, after) == {}:
                return after
            await trio.sleep(0.1)
    return after


def _grown(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What ``after`` holds more of than ``before``. The docker SDK keeps a connection pool
    per URL (/containers/<id>/json...), up to 25, each with its socket: bounded, so allowed.
    One fd fewer can be a transient fd open at the first snapshot."""
    fds = Counter(after["fds"]) - Counter(before["fds"])
    if fds[DOCKER_API] <= DOCKER_SDK_POOLS:
        del fds[DOCKER_API]
    grown: dict[str, Any] = {k: after[k] for k in before if k != "fds" and after[k] != before[k]}
    if fds:
        grown["fds"] = fds
    return grown


async def _cycle(name: str, records: list[dict[str, Any]]) -> None:
    """One container: started, every per-netns program attached, removed, all detached."""

    def about(kind: str) -> list[dict[str, Any]]:
        return [r for r in records if r["type"] == kind and r.get("container") == name]

    await arun("docker", "run", "-d", "--name", name, TEST_IMAGE, "sleep", "600")
    with trio.fail_after(30):
        # tc_bytes' two classifiers and dns's socket filter (iterators just run).
        while len(about("attached")) < 3:  # noqa: ASYNC110
            await trio.sleep(0.02)
    await arun("docker", "rm", "-f", name)
    with trio.fail_after(30):
        while len(about("detached")) < len(about("attached")):  # noqa: ASYNC110
            await trio.sleep(0.02)
