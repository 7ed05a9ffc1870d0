"""How long a process has run, and so how long a netns found through it has existed."""

from __future__ import annotations

import os
import subprocess
import time

from engine.process import age, start_ticks
from engine.sources.netns import _existed


def test_a_process_age_follows_its_start() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        started = time.monotonic()
        time.sleep(0.3)
        young = age(child.pid)
        assert young is not None
        assert 0.2 <= young <= time.monotonic() - started + 0.1
        assert start_ticks(child.pid) == start_ticks(child.pid)
        # The netns of a process has existed at least as long as the process has run.
        existed = _existed(f"/proc/{child.pid}/ns/net")
        assert young <= existed <= young + 1
    finally:
        child.kill()
        child.wait()
    assert age(child.pid) is None  # gone (its pid not reused within this test)
    assert _existed(f"/proc/{child.pid}/ns/net") == 0.0


def test_a_file_says_nothing_about_its_netns_age() -> None:
    assert _existed("/run/docker/netns/abc") == 0.0
    assert _existed("/run/netns/cni-1") == 0.0
    mine = age(os.getpid())
    assert mine is not None
    assert _existed(f"/proc/{os.getpid()}/ns/net") >= mine
