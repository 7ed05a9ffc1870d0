"""Who owns a tc filter: an engine process, named by pid and start time.

A pid alone can be reused after the engine dies; pid plus the process's start time (in clock
ticks since boot, field 22 of /proc/PID/stat) cannot, so leftovers of a dead engine are told
apart from the filters of a live one without any state file.
"""

from __future__ import annotations

import functools
import os

from engine.process import start_ticks


def current_owner() -> str:
    """This process's owner id, "PID.STARTTIME"."""
    return _owner(os.getpid())


@functools.cache
def _owner(pid: int) -> str:
    # Read once per process (every filter name carries it), by pid: a forked child is not
    # its parent.
    return f"{pid}.{start_ticks(pid)}"


def owner_alive(owner: str) -> bool:
    """Whether the engine process named by `owner` still runs. Malformed ids count as alive,
    so that a filter we cannot judge is left alone."""
    try:
        pid_text, start_text = owner.split(".", 1)
        pid, start = int(pid_text), int(start_text)
    except ValueError:
        return True
    return start_ticks(pid) == start
