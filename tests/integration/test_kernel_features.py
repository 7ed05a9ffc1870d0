"""Feature probing on this machine's kernel (6.18: no kprobes, trampolines refused)."""

from __future__ import annotations

import json
import os
import time

import pytest

from engine.kernel.features import features_main, probe_features
from tests.support.requirements import unavailable

pytestmark = pytest.mark.integration

AVAILABLE_HERE = [
    "tracepoint",
    "raw_tracepoint",
    "socket",
    "iter",
    "classifier",
    "uprobe",
    "uretprobe",
    "usdt",
]


@pytest.fixture
def host_kernel(root: None) -> None:
    """The expectations below describe the 6.18 test machine, not any kernel."""
    if not os.uname().release.startswith("6.18."):
        unavailable(f"expectations are for the 6.18 test kernel, this is {os.uname().release}")


def test_kprobes_are_not_built_here(host_kernel: None) -> None:
    features = probe_features()
    for kind in ("kprobe", "kretprobe"):
        support = features.supports(kind)
        assert not support.available
        assert support.reason == "kprobes are not built into this kernel (CONFIG_KPROBES)"


def test_trampolines_are_refused_here(host_kernel: None) -> None:
    features = probe_features()
    for kind in ("fentry", "fexit", "lsm"):
        support = features.supports(kind)
        assert not support.available
        assert "(EPERM)" in support.reason, support.reason
        assert support.reason.endswith("fentry/fexit/lsm are blocked here"), support.reason


@pytest.mark.parametrize("kind", AVAILABLE_HERE)
def test_available_here(host_kernel: None, kind: str) -> None:
    support = probe_features().supports(kind)
    assert support.available, support.reason


def test_probe_is_fast_and_closes_its_fds(root: None) -> None:
    before = sorted(os.listdir("/proc/self/fd"))
    # The best of three, so that a busy machine (a VM booting next door) does not decide.
    durations = []
    for _ in range(3):
        start = time.perf_counter()
        probe_features()
        durations.append(time.perf_counter() - start)
    assert min(durations) < 0.1, durations
    assert sorted(os.listdir("/proc/self/fd")) == before


def test_features_main_json_matches_the_probe(
    root: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert features_main(as_json=True) == 0
    assert json.loads(capsys.readouterr().out) == probe_features().to_json()
    assert features_main(as_json=False) == 0
    table = capsys.readouterr().out
    assert table.startswith(f"kernel {os.uname().release}\n")
    assert len(table.splitlines()) == 2 + len(probe_features().kinds)
