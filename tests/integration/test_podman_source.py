"""podman's containers through its API service (scripts/start-podman), followed by the Docker
source: reported with runtime "podman", and nothing lost across a restart of the service."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator

import docker
import docker.errors
import pytest
import requests
import trio

from engine.records import SourceDisconnected, SourceReconnected
from engine.sources.docker import client_at
from engine.sources.podman import DEFAULT_SOCKET, podman_source
from tests.support.constants import ROOT, TEST_IMAGE
from tests.support.docker import SLEEPER
from tests.support.requirements import unavailable
from tests.support.sources import added, removed, running

pytestmark = [pytest.mark.integration]

SERVICE = f"podman system service --time=0 unix://{DEFAULT_SOCKET}"


class Podman:
    """Test containers, all named `engine-test-<run>-<name>` and all removed at the end."""

    def __init__(self) -> None:
        self.prefix = f"engine-test-{uuid.uuid4().hex[:8]}-"
        self.made: list[str] = []

    def run(self, short: str) -> str:
        """Start a container from the test image; its full id."""
        name = self.prefix + short
        self.made.append(name)
        return podman("run", "-d", "--pull=never", "--name", name, TEST_IMAGE, *SLEEPER).strip()

    def remove(self, short: str) -> None:
        podman("rm", "-f", "-t", "0", self.prefix + short)

    def remove_all(self) -> None:
        for name in self.made:
            subprocess.run(
                ["podman", "rm", "-f", "-t", "0", name], capture_output=True, check=False
            )


def podman(*args: str) -> str:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"podman {' '.join(args)}: {done.stderr}"
    return done.stdout


@pytest.fixture
def containers(root: None) -> Iterator[Podman]:
    try:
        client_at(DEFAULT_SOCKET).close()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        unavailable(f"needs podman's API service on {DEFAULT_SOCKET} (scripts/start-podman): {exc}")
    made = Podman()
    try:
        yield made
    finally:
        made.remove_all()


async def test_podman_containers_have_runtime_podman(containers: Podman) -> None:
    before = await trio.to_thread.run_sync(containers.run, "before")
    async with running(podman_source(), buffer=256) as records:
        assert before in added(records.snapshot)
        listed = added(records.seen)[before]
        assert listed.runtime == "podman" and listed.to_json()["runtime"] == "podman"
        assert listed.name == containers.prefix + "before"
        assert "k8s" not in listed.to_json()
        # podman's netns files are named ones.
        assert listed.netns_path is not None and listed.netns_path.startswith("/run/netns/")
        assert os.stat(listed.netns_path).st_ino == listed.netns_inode
        assert listed.netns_inode == os.stat(f"/proc/{listed.pid}/ns/net").st_ino
        assert listed.mntns_inode == os.stat(f"/proc/{listed.pid}/ns/mnt").st_ino

        after = await trio.to_thread.run_sync(containers.run, "after")
        await records.until(lambda: after in added(records.seen), 10, "after added")
        assert added(records.seen)[after].runtime == "podman"
        await trio.to_thread.run_sync(containers.remove, "after")
        await records.until(lambda: after in removed(records.seen), 10, "after removed")


def stop_service() -> None:
    found = subprocess.run(
        ["pgrep", "-f", f"^{SERVICE}$"], capture_output=True, text=True, check=False
    )
    for pid in map(int, found.stdout.split()):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.05)


def start_service() -> None:
    subprocess.run([str(ROOT / "scripts" / "start-podman")], check=True, capture_output=True)


async def test_a_restart_of_the_service_loses_nothing(containers: Podman) -> None:
    """podman runs without its service: what changed while it was away is reported after."""
    gone = await trio.to_thread.run_sync(containers.run, "gone")
    source = podman_source()
    source.min_backoff = 0.05
    try:
        async with running(source, buffer=256) as records:
            assert gone in added(records.snapshot)
            await trio.to_thread.run_sync(stop_service)
            await records.until_seen(SourceDisconnected)
            new = await trio.to_thread.run_sync(containers.run, "new")
            await trio.to_thread.run_sync(containers.remove, "gone")
            await trio.to_thread.run_sync(start_service)
            await records.until_seen(SourceReconnected)
            gap = records.since_gap()
            assert set(removed(gap)) == {gone}
            assert set(added(gap)) == {new}
            assert isinstance(gap[-1], SourceReconnected)
    finally:
        start_service()
