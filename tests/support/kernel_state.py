"""What of ours the kernel and this process hold: tc filters, BPF programs, maps and links,
tracefs probes, open fds.

``KernelState.now()`` takes it all at once; ``left_since(before)`` says what is new, one line
per object, so that a failure lists exactly what was left behind.
"""

from __future__ import annotations

import gc
import json
import os
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import attrs

from tests.support.commands import run

TRACEFS = Path("/sys/kernel/tracing")
# Engines name their filters engine_<pid>.<start>_<program> (engine/attach/owner.py).
ENGINE_FILTER = re.compile(r"\bengine_\d+\.")
# bcc names its kprobe/uprobe events ..._bcc_<pid>.
BCC_PROBE = re.compile(r"_bcc_\d+\b")


def tc_filters(*devices: str) -> list[str]:
    """Every tc filter on the clsact hooks of ``devices`` (default: every interface), as
    ``<dev> <hook>: <line>``."""
    lines = []
    for dev in devices or sorted(os.listdir("/sys/class/net")):
        for hook in ("ingress", "egress"):
            out = run("tc", "filter", "show", "dev", dev, hook, check=False)
            lines += [f"{dev} {hook}: {line}" for line in out.splitlines() if "filter" in line]
    return lines


def engine_filters(*devices: str) -> list[str]:
    """The filters any engine added (on ``devices``, default: everywhere)."""
    return [line for line in tc_filters(*devices) if ENGINE_FILTER.search(line)]


def filters_of(pid: int, *devices: str) -> list[str]:
    """The filters the engine process ``pid`` added."""
    return [line for line in engine_filters(*devices) if f"engine_{pid}." in line]


def our_tc_filters(*devices: str) -> list[str]:
    """The filters this process added."""
    return filters_of(os.getpid(), *devices)


def bpf_objects(kind: str) -> dict[int, dict[str, Any]]:
    """Loaded BPF programs, maps or links (``kind``: prog, map, link) by id, as bpftool says."""
    return {int(e["id"]): e for e in json.loads(run("bpftool", kind, "show", "-j") or "[]")}


def bpf_programs() -> dict[int, str]:
    """Loaded BPF programs: id -> name."""
    return {i: p.get("name", "") for i, p in bpf_objects("prog").items()}


def _described(kind: str) -> dict[int, str]:
    return {
        i: " ".join(f"{key}={e[key]}" for key in ("type", "name", "prog_id") if key in e)
        for i, e in bpf_objects(kind).items()
    }


def tracefs_probes(marker: str = "_bcc_") -> list[str]:
    """kprobe/uprobe definitions whose line holds ``marker``."""
    lines = []
    for name in ("kprobe_events", "uprobe_events"):
        path = TRACEFS / name
        if path.exists():
            lines += [line for line in path.read_text().splitlines() if marker in line]
    return lines


def socket_families(pid: int | str) -> dict[str, str]:
    """Socket inode -> the /proc/net table it is listed in (packet, netlink, unix...)."""
    families = {}
    for table in ("packet", "netlink", "unix", "tcp", "tcp6", "udp", "udp6", "raw"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        column = {"packet": 8, "netlink": 9, "unix": 6}.get(table, 9)
        for line in lines:
            fields = line.split()
            if len(fields) > column:
                families[fields[column]] = table
    return families


def fd_kinds(pid: int | str = "self") -> Counter[str]:
    """What the open fds refer to, counted by kind: files by path, sockets by family, pipes
    and anonymous inodes by type (a pipe or connection replaced by another is no leak)."""
    kinds: Counter[str] = Counter()
    families = socket_families(pid)
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            target = f"socket ({families.get(target[8:-1], 'other')})"
        elif target.startswith("pipe:["):
            target = "pipe"
        kinds[target] += 1
    return kinds


def own_bpf_objects(pid: int | str = "self") -> dict[str, set[int]]:
    """The BPF programs, maps and links that a process holds fds on, by kind: read from
    fdinfo, so that other processes' objects (other tests, other tools) do not count."""
    found: dict[str, set[int]] = {"prog_id": set(), "map_id": set(), "link_id": set()}
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue  # closed meanwhile
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key in found:
                found[key].add(int(value))
    return found


def rss_kib(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@attrs.frozen
class KernelState:
    """Engine tc filters, BPF objects by id, bcc's tracefs probes and this process's fds."""

    filters: frozenset[str]
    programs: dict[int, str]
    maps: dict[int, str]
    links: dict[int, str]
    probes: frozenset[str]
    fds: Counter[str]

    @classmethod
    def now(cls) -> KernelState:
        return cls(
            frozenset(engine_filters()),
            _described("prog"),
            _described("map"),
            _described("link"),
            frozenset(tracefs_probes()),
            fd_kinds(),
        )

    def left_since(self, before: KernelState, allowed_fds: Counter[str] | None = None) -> list[str]:
        """What exists now and did not before, one line each (empty: nothing is left).
        ``allowed_fds`` is growth by kind that is expected (a pool still in use)."""
        left = [f"tc filter: {line}" for line in sorted(self.filters - before.filters)]
        for kind, now, then in (
            ("BPF program", self.programs, before.programs),
            ("BPF map", self.maps, before.maps),
            ("BPF link", self.links, before.links),
        ):
            left += [f"{kind} id {i}: {now[i]}" for i in sorted(now.keys() - then.keys())]
        left += [f"tracefs probe: {line}" for line in sorted(self.probes - before.probes)]
        grown = self.fds - before.fds - (allowed_fds or Counter())
        left += [f"fd: {kind} (+{n})" for kind, n in sorted(grown.items())]
        return left


@attrs.frozen
class Leftovers:
    """What a test left, before and after a garbage collection: what only the collector
    released was held by an object nobody closed."""

    before_gc: list[str]
    after_gc: list[str]

    def __bool__(self) -> bool:
        return bool(self.before_gc)

    def __str__(self) -> str:
        text = "  " + "\n  ".join(self.before_gc)
        if not self.after_gc:
            text += "\n(a garbage collection released all of it: held by objects nobody closed)"
        elif self.after_gc != self.before_gc:
            text += "\nafter a garbage collection, still:\n  " + "\n  ".join(self.after_gc)
        return text


def left_behind(
    before: KernelState, timeout: float = 5.0, allowed_fds: Counter[str] | None = None
) -> Leftovers:
    """What is still left since ``before`` once ``timeout`` has passed, or nothing as soon as
    nothing is: the kernel frees a program after an RCU grace period, and a close in a worker
    thread may finish a moment after the code that asked for it."""
    deadline = time.monotonic() + timeout
    # No collection while waiting: what only the garbage collector would release must show,
    # not go by chance.
    collecting = gc.isenabled()
    gc.disable()
    try:
        while True:
            left = KernelState.now().left_since(before, allowed_fds)
            if not left or time.monotonic() >= deadline:
                break
            time.sleep(0.05)  # a look at the kernel: there is no notice to wait on
    finally:
        if collecting:
            gc.enable()
    if not left:
        return Leftovers([], [])
    gc.collect()
    return Leftovers(left, KernelState.now().left_since(before, allowed_fds))
