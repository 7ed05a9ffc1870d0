"""Who used the CPUs during a benchmark: this process, the Docker daemons, the whole machine.

On 2 CPUs a churn run can be bound by the engine or by Docker itself; comparing the three over
the same window says which (the machine's busy time includes everyone else's work too).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from benchmarks.idle import TICKS

DOCKER_PROCESSES = ("dockerd", "containerd", "docker-proxy")


def snapshot() -> dict[str, float]:
    """CPU seconds so far: this process (the engine and the benchmark's consumer), the
    Docker daemons (dockerd, containerd and its shims, their reaped children: runc), and the
    whole machine (every CPU, busy time)."""
    docker = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone while we looked
        comm, _, rest = text.rpartition(")")
        if comm.split("(", 1)[-1].startswith(DOCKER_PROCESSES):
            fields = rest.split()
            docker += sum(int(v) for v in fields[11:15]) / TICKS
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[:8])
    own = os.times()
    return {
        "engine_process": own.user + own.system,
        "docker": docker,
        "machine_busy": (user + nice + system + irq + softirq + steal) / TICKS,
        "wall": time.monotonic(),
    }


def used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    used = {k: after[k] - before[k] for k in before}
    wall = used.pop("wall")
    return {**{f"{k}_s": v for k, v in used.items()}, "wall_s": wall, "cpus": os.cpu_count() or 1}
