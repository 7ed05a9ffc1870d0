"""(5) Leaks over start/stop cycles.

A container is started, attached, removed and detached, N times; before and after, the
engine process's own fds by kind (BPF programs, links, maps, sockets, others), its RSS, and the
tc filters on the host's devices.
"""

from __future__ import annotations

import os
import subprocess
from collections import defaultdict
from typing import Any

import trio

from benchmarks import containers
from benchmarks.churn import GADGET
from benchmarks.results import Figure
from benchmarks.timeline import Timeline, follow
from engine.engine import open_engine
from tests.support import kernel_state

DOCKER_POOLS = 25  # docker-py's DEFAULT_NUM_POOLS


def fd_kinds(pid: int | None = None) -> dict[str, int]:
    """The process's open fds by kind: bpf-prog, bpf-link, bpf-map, socket:FAMILY, other
    (kernel_state.fd_kinds, its kinds folded). A socket made in a container's netns is not
    listed in ours: its family shows as "other-netns"."""
    counts: dict[str, int] = defaultdict(int)
    for kind, n in kernel_state.fd_kinds(pid or "self").items():
        if kind.startswith("anon_inode:bpf-"):
            counts[kind.removeprefix("anon_inode:")] += n
        elif kind.startswith("socket ("):
            family = kind.removeprefix("socket (").removesuffix(")")
            counts[f"socket:{'other-netns' if family == 'other' else family}"] += n
        else:
            counts["other"] += n
    return dict(counts)


def tc_filters() -> int:
    """tc filters on the host's devices (ingress and egress), ours or anyone's: the lines
    with a handle (a priority's header line has none)."""
    return sum("handle" in line for line in kernel_state.tc_filters())


def _snapshot() -> dict[str, Any]:
    from benchmarks.idle import rss_mb

    return {"fds": fd_kinds(), "rss_mb": rss_mb(os.getpid()), "tc_filters": tc_filters()}


async def _cycles(count: int) -> dict[str, Any]:
    timeline = Timeline()
    selection = [f"name={containers.PREFIX}cycle-*"]
    async with open_engine(GADGET, select=selection) as engine, trio.open_nursery() as nursery:
        nursery.start_soon(follow, engine, timeline)
        done = 0

        async def one_cycle(i: int) -> bool:
            name = f"{containers.PREFIX}cycle-{i}"
            try:
                await trio.to_thread.run_sync(containers.start, name, "sleep", "3600")
                ok = await timeline.until(lambda: timeline.attached_at(name) is not None, 30)
            except subprocess.CalledProcessError:
                ok = False  # the daemon refused (restarted by someone?): an unclean cycle
            finally:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(containers.remove, [name])
            return ok and await timeline.until(lambda: timeline.all_detached([name]), 30)

        await one_cycle(-1)  # warm-up: first-use allocations are not leaks
        before = await trio.to_thread.run_sync(_snapshot)
        for i in range(count):
            done += await one_cycle(i)
        after = await trio.to_thread.run_sync(_snapshot)
        nursery.cancel_scope.cancel()
    return {"cycles": count, "clean_cycles": done, "before": before, "after": after}


def measure_leaks(count: int) -> tuple[list[Figure], dict[str, Any]]:
    details = trio.run(_cycles, count)
    before, after = details["before"], details["after"]
    kinds = sorted(set(before["fds"]) | set(after["fds"]))
    grown = {k: after["fds"].get(k, 0) - before["fds"].get(k, 0) for k in kinds}
    # The Docker SDK keeps one connection pool per URL (each container's inspect URL), at most
    # DOCKER_POOLS of them, each holding a unix socket: bounded growth, not a leak.
    unix_growth = grown.pop("socket:unix", 0)
    leaked_fds = sum(max(v, 0) for v in grown.values())
    tc_growth = after["tc_filters"] - before["tc_filters"]
    rss_growth = after["rss_mb"] - before["rss_mb"]
    figures = [
        Figure(
            f"leaks after {count} start/stop cycles: fds (bpf, sockets but unix, other)",
            leaked_fds,
            "fds",
            target="0",
            met=leaked_fds == 0,
            note=f"{details['clean_cycles']} of {count} cycles attached and detached; "
            + ", ".join(f"{k} {before['fds'].get(k, 0)}→{after['fds'].get(k, 0)}" for k in kinds),
        ),
        Figure(
            f"leaks after {count} cycles: unix sockets (Docker SDK pools)",
            unix_growth,
            "fds",
            target=f"≤ {DOCKER_POOLS} (bounded)",
            met=unix_growth <= DOCKER_POOLS,
        ),
        Figure(
            f"leaks after {count} cycles: tc filters on host devices",
            tc_growth,
            "filters",
            target="0",
            met=tc_growth <= 0,
            note=f"{before['tc_filters']}→{after['tc_filters']} (anyone's)",
        ),
        Figure(
            f"leaks after {count} cycles: RSS growth",
            rss_growth,
            "MB",
            target="< 5 MB",
            met=rss_growth < 5,
            note=f"{before['rss_mb']:.1f}→{after['rss_mb']:.1f} MB",
        ),
    ]
    return figures, details
