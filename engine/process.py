"""What /proc says about a process: its start time, and so its age."""

from __future__ import annotations

import os
import time

_TICKS = os.sysconf("SC_CLK_TCK")


def start_ticks(pid: int) -> int | None:
    """When the process started, in clock ticks since boot (field 22 of /proc/PID/stat);
    None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from the last ")".
    fields = stat[stat.rindex(b")") + 2 :].split()
    return int(fields[19])


def age(pid: int) -> float | None:
    """How long the process has been running, in seconds (the kernel counts its start on
    the boot clock, suspend included); None if it is gone."""
    ticks = start_ticks(pid)
    if ticks is None:
        return None
    return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / _TICKS)
