"""The other runtimes' test containers: pods made through the CRI of the tests' containerd
(tests/runtimes/cri.py), `ctr run` containers, podman containers; every one removed after
the test. The fixtures are registered in tests/integration/conftest.py."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator

import attrs
import docker.errors
import grpc
import pytest
import requests

from engine.sources.docker import client_at
from engine.sources.podman import DEFAULT_SOCKET as PODMAN_SOCKET
from tests.runtimes.cri import IMAGE, SLEEPER, SOCKET, Cri, ctr, ctr_remove, daemon_pid
from tests.support.commands import run
from tests.support.constants import ROOT, TEST_IMAGE
from tests.support.requirements import unavailable

# How rootful podman's API service is started (scripts/start-podman), to find it again.
PODMAN_SERVICE = f"podman system service --time=0 unix://{PODMAN_SOCKET}"


@pytest.fixture
def cri(root: None) -> Iterator[Cri]:
    """A CRI client of the tests' containerd; every pod it made is removed afterwards."""
    if daemon_pid() is None:
        unavailable(f"needs the tests' containerd on {SOCKET} (scripts/start-containerd)")
    client = Cri()
    try:
        client.version()
    except grpc.RpcError as exc:
        client.close()
        unavailable(f"the tests' containerd does not answer on {SOCKET}: {exc}")
    try:
        yield client
    finally:
        client.remove_all()
        client.close()


@attrs.define
class CtrContainers:
    """`ctr run` containers in containerd's namespace ``default``, all removed at the end."""

    made: list[str] = attrs.Factory(list)

    def run(self, name: str) -> str:
        """Start a sleeper named (and with the id) ``name``; its id."""
        self.made.append(name)
        ctr("run", "-d", IMAGE, name, *SLEEPER)
        return name

    def remove_all(self) -> None:
        for name in self.made:
            ctr_remove(name)


@pytest.fixture
def ctr_containers(cri: Cri) -> Iterator[CtrContainers]:
    made = CtrContainers()
    try:
        yield made
    finally:
        made.remove_all()


def pod_exec(container_id: str, *argv: str) -> str:
    """Run ``argv`` in a container that the CRI made (containerd namespace k8s.io), as
    `kubectl exec` would have the runtime do; its output (blocking)."""
    return ctr(
        "task", "exec", "--exec-id", uuid.uuid4().hex[:12], container_id, *argv, namespace="k8s.io"
    )


def ctr_exec(container_id: str, *argv: str) -> str:
    """Run ``argv`` in a `ctr run` container (namespace default) (blocking)."""
    return ctr("task", "exec", "--exec-id", uuid.uuid4().hex[:12], container_id, *argv)


def ipv4_of(netns_path: str) -> str:
    """The address of eth0 in the netns at ``netns_path`` (a pod's, a podman container's)."""
    out = run("nsenter", f"--net={netns_path}", "ip", "-4", "-o", "addr", "show", "eth0")
    return out.split()[3].split("/")[0]


def stop_containerd() -> None:
    """SIGTERM the tests' containerd and wait for it to end (its tasks run on)."""
    pid = daemon_pid()
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{pid}"), "containerd did not stop"


def start_containerd() -> None:
    """scripts/start-containerd (started in a session of its own, holding no fd of ours)."""
    subprocess.run([str(ROOT / "scripts" / "start-containerd")], check=True, capture_output=True)


def stop_podman_service() -> None:
    """SIGTERM podman's API service and wait for it to end (podman runs on without it)."""
    found = subprocess.run(
        ["pgrep", "-f", f"^{PODMAN_SERVICE}$"], capture_output=True, text=True, check=False
    )
    for pid in map(int, found.stdout.split()):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.05)


def start_podman_service() -> None:
    """scripts/start-podman (the service in a session of its own, holding no fd of ours)."""
    subprocess.run([str(ROOT / "scripts" / "start-podman")], check=True, capture_output=True)


def podman(*args: str) -> str:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"podman {' '.join(args)}: {done.stderr}"
    return done.stdout


@attrs.define
class Podman:
    """podman containers named ``engine-test-<tag>-<role>``, all removed at the end."""

    tag: str = attrs.Factory(lambda: uuid.uuid4().hex[:8])
    made: list[str] = attrs.Factory(list)

    @property
    def prefix(self) -> str:
        return f"engine-test-{self.tag}-"

    def name(self, role: str) -> str:
        return self.prefix + role

    def run(self, role: str, *options: str) -> str:
        """Start a sleeper from the test image; its full id."""
        name = self.name(role)
        self.made.append(name)
        argv = ("run", "-d", "--pull=never", "--name", name, *options, TEST_IMAGE, *SLEEPER)
        return podman(*argv).strip()

    def exec(self, role: str, *argv: str) -> str:
        return podman("exec", self.name(role), *argv)

    def netns_path(self, role: str) -> str:
        key = podman("inspect", "--format", "{{.NetworkSettings.SandboxKey}}", self.name(role))
        return key.strip()

    def remove(self, role: str) -> None:
        podman("rm", "-f", "-t", "0", self.name(role))

    def remove_all(self) -> None:
        for name in self.made:
            subprocess.run(
                ["podman", "rm", "-f", "-t", "0", name], capture_output=True, check=False
            )


@pytest.fixture
def podman_containers(root: None) -> Iterator[Podman]:
    """podman's API service answers; this test's podman containers, removed after it."""
    try:
        client_at(PODMAN_SOCKET).close()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        unavailable(f"needs podman's API service on {PODMAN_SOCKET} (scripts/start-podman): {exc}")
    made = Podman()
    try:
        yield made
    finally:
        made.remove_all()
