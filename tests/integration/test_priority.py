"""The attach path's priority without CAP_SYS_NICE: one warning, and the thread as it was."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

# Run as nobody, with no capabilities: raising a thread's priority is refused.
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]
CHILD = """
import logging, os, threading
from engine.netns.priority import Priority, raised
logging.basicConfig(format="%(levelname)s %(message)s")
tid = threading.get_native_id()
with raised(Priority(nice=-10)):
    print("inside", os.getpriority(os.PRIO_PROCESS, tid), os.sched_getscheduler(tid))
with raised(Priority(realtime=1)):
    print("inside", os.getpriority(os.PRIO_PROCESS, tid), os.sched_getscheduler(tid))
print("after", os.getpriority(os.PRIO_PROCESS, tid), os.sched_getscheduler(tid))
"""


def test_without_cap_sys_nice_the_thread_stays_and_one_warning_says_why(root: None) -> None:
    done = subprocess.run(
        [*NOBODY, sys.executable, "-c", CHILD],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
        env={"PYTHONPATH": ":".join(sys.path)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["inside 0 0", "inside 0 0", "after 0 0"], done.stdout
    warnings = done.stderr.splitlines()
    assert len(warnings) == 2, done.stderr  # one per engine (each `raised` block)
    assert all(
        w.startswith("WARNING the attach path stays at its default priority") for w in warnings
    )
    assert all("needs CAP_SYS_NICE" in w for w in warnings)
