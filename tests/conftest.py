"""Shared test fixtures: requirements that fail under CI=true and skip elsewhere."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TEST_IMAGE = os.environ.get("ENGINE_TEST_IMAGE", "engine-test:latest")
IN_CI = os.environ.get("CI") == "true"


def unavailable(reason: str) -> None:
    """Skip outside CI; under CI=true a missing requirement is a failure, never a skip."""
    if IN_CI:
        pytest.fail(f"required under CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


def _has_bcc() -> bool:
    try:
        import bcc  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture
def root() -> None:
    """The test needs root, tracefs and bcc."""
    if os.geteuid() != 0:
        unavailable("needs root")
    if not _has_bcc():
        unavailable("needs bcc (python3-bpfcc)")
    if not Path("/sys/kernel/tracing/events").is_dir():
        unavailable("needs tracefs mounted at /sys/kernel/tracing")


@pytest.fixture
def docker_daemon(root: None) -> None:
    """The test needs the local Docker daemon and the test image."""
    if shutil.which("docker") is None:
        unavailable("needs the docker client")
    probe = subprocess.run(
        ["docker", "image", "inspect", TEST_IMAGE], capture_output=True, check=False
    )
    if probe.returncode != 0:
        unavailable(f"needs a running Docker daemon and the image {TEST_IMAGE}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`vmkernel` tests need kprobes/fentry/lsm: they run inside Debian's 6.1 VM.

    scripts/vm-run sets ENGINE_IN_VM=1; tests/vm/test_debian_kernel.py boots the VM once and
    reports their results on the host. Elsewhere they are skipped (a deliberate skip, not a
    missing requirement), unless ENGINE_RUN_VMKERNEL=1 asks for them on a kernel that can.
    """
    if os.environ.get("ENGINE_IN_VM") == "1" or os.environ.get("ENGINE_RUN_VMKERNEL") == "1":
        return
    skip = pytest.mark.skip(
        reason="runs inside the Debian 6.1 VM (tests/vm/test_debian_kernel.py);"
        " ENGINE_RUN_VMKERNEL=1 runs it here"
    )
    for item in items:
        if item.get_closest_marker("vmkernel") is not None:
            item.add_marker(skip)


def our_tc_filters() -> list[str]:
    """tc filters anywhere on the host that this process added (named engine_<pid>.<start>_)."""
    out = subprocess.run(
        [
            "sh",
            "-c",
            "for l in $(ls /sys/class/net); do tc filter show dev $l ingress;"
            " tc filter show dev $l egress; done 2>/dev/null",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return [line for line in out.splitlines() if f"engine_{os.getpid()}." in line]
