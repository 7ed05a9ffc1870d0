"""One rule for what a test needs: skipped outside CI, a failure under CI=true."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.constants import IN_CI, TEST_IMAGE


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


def require_root() -> None:
    """Root, tracefs and bcc."""
    if os.geteuid() != 0:
        unavailable("needs root")
    if not _has_bcc():
        unavailable("needs bcc (python3-bpfcc)")
    if not Path("/sys/kernel/tracing/events").is_dir():
        unavailable("needs tracefs mounted at /sys/kernel/tracing")


def require_docker() -> None:
    """The local Docker daemon and the test image."""
    if shutil.which("docker") is None:
        unavailable("needs the docker client")
    probe = subprocess.run(
        ["docker", "image", "inspect", TEST_IMAGE], capture_output=True, check=False
    )
    if probe.returncode != 0:
        unavailable(f"needs a running Docker daemon and the image {TEST_IMAGE}")
