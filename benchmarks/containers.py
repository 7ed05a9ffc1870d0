"""Benchmark containers: ``engine-bench-*`` from the locally built test image, always removed."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

IMAGE = os.environ.get("ENGINE_TEST_IMAGE", "engine-test:latest")
PREFIX = "engine-bench-"


def docker_ready() -> str | None:
    """Why containers cannot run here, or None when they can."""
    if shutil.which("docker") is None:
        return "no docker client"
    probe = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True, check=False)
    return None if probe.returncode == 0 else f"no Docker daemon or no image {IMAGE}"


def start(name: str, *command: str) -> None:
    subprocess.run(
        ["docker", "run", "-d", "--name", name, IMAGE, *command],
        check=True,
        capture_output=True,
    )


def remove(names: list[str]) -> None:
    if names:
        subprocess.run(["docker", "rm", "-f", *names], check=False, capture_output=True)


@contextmanager
def sleeping(group: str, count: int) -> Iterator[list[str]]:
    """``count`` containers running ``sleep``; removed on exit, also after an error."""
    names = [f"{PREFIX}{group}-{i}" for i in range(count)]
    remove(names)  # left over from an interrupted run
    try:
        for name in names:
            start(name, "sleep", "3600")
        yield names
    finally:
        remove(names)
