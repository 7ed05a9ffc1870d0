"""DockerSource against the real daemon and real containers of the locally built test image."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import docker
import docker.errors
import pytest
import trio

from engine.records import (
    ContainerAdded,
    ContainerEvent,
    ContainerPaused,
    ContainerRemoved,
    ContainerRenamed,
    ContainerUnpaused,
    SourceDisconnected,
    SourceReconnected,
)
from engine.sources.containers import Container
from engine.sources.docker import DockerSource, default_client

pytestmark = [pytest.mark.integration, pytest.mark.docker]

ROOT = Path(__file__).resolve().parents[2]
TEST_IMAGE = os.environ.get("ENGINE_TEST_IMAGE", "engine-test:latest")

# PID 1 of a container ignores SIGTERM unless it handles it: handle it, so that `docker stop`
# and a stopping daemon do not wait 10 s before killing.
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait"]


class Containers:
    """Test containers, all named `engine-test-<run>-<name>` and all removed at the end."""

    def __init__(self) -> None:
        self.prefix = f"engine-test-{uuid.uuid4().hex[:8]}-"
        self.made: list[str] = []

    def name(self, short: str) -> str:
        return self.prefix + short

    async def run(self, short: str, *options: str) -> str:
        name = self.name(short)
        self.made.append(name)
        out = await docker_cli("run", "-d", "--name", name, *options, TEST_IMAGE, *SLEEPER)
        return out.strip()

    def remove_all(self) -> None:
        if self.made:
            subprocess.run(["docker", "rm", "-f", *self.made], capture_output=True, check=False)


@pytest.fixture
def containers(docker_daemon: None) -> Iterator[Containers]:
    made = Containers()
    try:
        yield made
    finally:
        made.remove_all()


async def docker_cli(*args: str) -> str:
    done = await trio.to_thread.run_sync(
        lambda: subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    )
    assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr}"
    return done.stdout


class Records:
    """Everything a source sent, with a way to wait for a condition on it."""

    def __init__(self) -> None:
        self.seen: list[ContainerEvent] = []
        self._changed = trio.Event()

    async def consume(self, receive: trio.abc.ReceiveChannel[ContainerEvent]) -> None:
        async for record in receive:
            self.seen.append(record)
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for(
        self, what: str, condition: Callable[[list[ContainerEvent]], bool], within: float = 10
    ) -> None:
        try:
            with trio.fail_after(within):
                while not condition(self.seen):
                    await self._changed.wait()
        except trio.TooSlowError:
            pytest.fail(f"waited {within} s for {what}; saw {self.seen}")

    def about(self, name: str) -> list[ContainerEvent]:
        """The records about one container, in order (source records excluded)."""
        return [r for r in self.seen if hasattr(r, "container") and r.container.name == name]


def added(records: Sequence[ContainerEvent], name: str) -> Container | None:
    for record in records:
        if isinstance(record, ContainerAdded) and record.container.name == name:
            return record.container
    return None


def kinds(records: Sequence[ContainerEvent]) -> list[str]:
    return [r.TYPE for r in records]


async def expect_added(records: Records, name: str) -> Container:
    await records.wait_for(f"{name} added", lambda seen: added(seen, name) is not None)
    container = added(records.seen, name)
    assert container is not None
    return container


def assert_matches_the_kernel(container: Container) -> None:
    ns = Path("/proc") / str(container.pid) / "ns"
    assert container.netns_inode == os.stat(ns / "net").st_ino
    assert container.mntns_inode == os.stat(ns / "mnt").st_ino
    assert container.mntns_inode != os.stat("/proc/self/ns/mnt").st_ino


async def test_containers_before_and_after_start_and_rm_f(containers: Containers) -> None:
    before_id = await containers.run("before", "--label", "app=db")
    source = DockerSource()
    records = Records()
    send, receive = trio.open_memory_channel[ContainerEvent](0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(records.consume, receive)
        with trio.fail_after(10):
            snapshot = await nursery.start(source.run, send)
        # What runs at start is handed back by start(), not sent: nobody reads the channel
        # before start() returns.
        before = added(snapshot, containers.name("before"))
        assert before is not None
        assert before.id == before_id
        assert before.label_map == {"app": "db"}
        assert before.image == TEST_IMAGE
        assert_matches_the_kernel(before)

        after_id = await containers.run("after")
        after = await expect_added(records, containers.name("after"))
        assert after.id == after_id
        assert after.shares_netns_with is None
        assert after.netns_inode != before.netns_inode
        assert_matches_the_kernel(after)
        assert after.netns_path is not None
        assert os.stat(after.netns_path).st_ino == after.netns_inode

        await docker_cli("rm", "-f", containers.name("after"))
        await records.wait_for(
            "after removed",
            lambda _: (
                kinds(records.about(containers.name("after")))
                == ["container_added", "container_removed"]
            ),
        )
        assert after_id not in source.known
        assert before_id in source.known
        nursery.cancel_scope.cancel()


async def test_pause_unpause_rename(containers: Containers) -> None:
    source = DockerSource()
    records = Records()
    send, receive = trio.open_memory_channel[ContainerEvent](0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(records.consume, receive)
        with trio.fail_after(10):
            records.seen += await nursery.start(source.run, send)
        await containers.run("p")
        await expect_added(records, containers.name("p"))
        await docker_cli("pause", containers.name("p"))
        await docker_cli("unpause", containers.name("p"))
        containers.made.append(containers.name("renamed"))
        await docker_cli("rename", containers.name("p"), containers.name("renamed"))

        def renamed(seen: list[ContainerEvent]) -> bool:
            return any(isinstance(r, ContainerRenamed) for r in seen)

        await records.wait_for("rename", renamed)
        ours = [r for r in records.seen if hasattr(r, "container") and r.container.id]
        ours = [r for r in ours if r.container.name.startswith(containers.prefix)]
        assert [type(r) for r in ours] == [
            ContainerAdded,
            ContainerPaused,
            ContainerUnpaused,
            ContainerRenamed,
        ]
        assert ours[1].container.paused and not ours[2].container.paused
        last = ours[3]
        assert isinstance(last, ContainerRenamed)
        assert last.old_name == containers.name("p")
        assert last.container.name == containers.name("renamed")
        nursery.cancel_scope.cancel()


async def test_containers_sharing_a_netns(containers: Containers) -> None:
    source = DockerSource()
    records = Records()
    send, receive = trio.open_memory_channel[ContainerEvent](0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(records.consume, receive)
        with trio.fail_after(10):
            records.seen += await nursery.start(source.run, send)
        owner_id = await containers.run("owner")
        await containers.run("guest", "--network", f"container:{containers.name('owner')}")
        owner = await expect_added(records, containers.name("owner"))
        guest = await expect_added(records, containers.name("guest"))
        assert guest.netns_inode == owner.netns_inode
        assert guest.netns_inode is not None
        assert guest.shares_netns_with == owner_id
        assert owner.shares_netns_with is None
        assert guest.mntns_inode != owner.mntns_inode
        assert guest.cgroup_id != owner.cgroup_id or guest.cgroup_id is None
        nursery.cancel_scope.cancel()


def expected_cgroup_id(pid: int) -> int | None:
    """What bpf_get_current_cgroup_id() reports for `pid`: its unified cgroup's inode, when the
    process is below the root of a mounted cgroup2 hierarchy."""
    unified = next(
        (
            line.split()[4]
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if " - cgroup2 " in line
        ),
        None,
    )
    own = Path("/proc") / str(pid) / "cgroup"
    path = next(ln[3:] for ln in own.read_text().splitlines() if ln.startswith("0::"))
    if unified is None or path == "/":
        return None
    return os.stat(unified + path).st_ino


async def test_cgroup_id_is_the_unified_cgroup_inode(containers: Containers) -> None:
    container_id = await containers.run("cg")
    inspected = await trio.to_thread.run_sync(
        lambda: docker.APIClient().inspect_container(container_id)
    )
    container = Container.from_docker(inspected)
    assert container.cgroup_id == expected_cgroup_id(container.pid)


async def test_absent_daemon_is_not_an_error() -> None:
    attempts = 0
    retried = trio.Event()

    def unreachable() -> docker.APIClient:
        nonlocal attempts
        attempts += 1
        if attempts == 5:
            trio.from_thread.run_sync(retried.set)
        return docker.APIClient(base_url="unix:///nonexistent/engine-test.sock")

    source = DockerSource(client_factory=unreachable, min_backoff=0.05, max_backoff=0.2)
    records = Records()
    send, receive = trio.open_memory_channel[ContainerEvent](0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(records.consume, receive)
        with trio.fail_after(10):
            records.seen += await nursery.start(source.run, send)
        await records.wait_for("disconnected", lambda seen: len(seen) >= 1)
        with trio.fail_after(10):
            await retried.wait()
        assert kinds(records.seen) == ["source_disconnected"]
        assert isinstance(records.seen[0], SourceDisconnected)
        assert "cannot connect" in records.seen[0].error
        nursery.cancel_scope.cancel()


def dockerd_pid() -> int:
    return int(Path("/var/run/docker.pid").read_text().strip())


async def stop_dockerd() -> None:
    pid = dockerd_pid()
    # A pidfd turns readable when the process has exited.
    pidfd = os.pidfd_open(pid)
    try:
        os.kill(pid, signal.SIGTERM)
        await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)


async def start_dockerd() -> None:
    done = await trio.to_thread.run_sync(
        lambda: subprocess.run(
            [str(ROOT / "scripts" / "start-docker")], capture_output=True, text=True, check=False
        )
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture
def restores_dockerd(docker_daemon: None) -> Iterator[None]:
    """Whatever happens, the daemon runs again after the test."""
    try:
        yield
    finally:
        subprocess.run([str(ROOT / "scripts" / "start-docker")], check=False, timeout=60)


class Gate:
    """Keeps a source from reconnecting while closed, so that changes happen during its gap."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self._open.set()

    def close(self) -> None:
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    def client(self) -> docker.APIClient:
        if not self._open.is_set():
            raise docker.errors.DockerException("the test keeps the source disconnected")
        return default_client()


async def wait_running(name: str) -> None:
    with trio.fail_after(30):
        while True:
            state = await docker_cli("inspect", "-f", "{{.State.Running}}", name)
            if state.strip() == "true":
                return
            await trio.sleep(0.1)


async def test_daemon_restart_loses_nothing(restores_dockerd: None, containers: Containers) -> None:
    gate = Gate()
    source = DockerSource(client_factory=gate.client, max_backoff=0.5)
    records = Records()
    send, receive = trio.open_memory_channel[ContainerEvent](0)
    killed, restarting, doomed, in_gap, live = (
        containers.name(n) for n in ("killed", "restarting", "doomed", "in-gap", "live")
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(records.consume, receive)
        with trio.fail_after(10):
            records.seen += await nursery.start(source.run, send)
        await containers.run("killed")
        await containers.run("restarting", "--restart=always")
        await containers.run("doomed", "--restart=always")
        for name in (killed, restarting, doomed):
            await expect_added(records, name)
        first_restarting = added(records.seen, restarting)
        assert first_restarting is not None

        gate.close()
        with trio.fail_after(60):
            await stop_dockerd()
        await records.wait_for(
            "disconnection", lambda seen: any(isinstance(r, SourceDisconnected) for r in seen)
        )
        with trio.fail_after(60):
            await start_dockerd()
        # While the source is still disconnected: the daemon brings back the containers with a
        # restart policy; one of them is removed again, and a new one starts.
        await wait_running(restarting)
        await wait_running(doomed)
        await docker_cli("rm", "-f", doomed)
        await containers.run("in-gap")
        gate.open()
        await records.wait_for(
            "reconnection", lambda seen: any(isinstance(r, SourceReconnected) for r in seen), 30
        )
        await containers.run("live")
        await expect_added(records, live)

        # A graceful stop reports the deaths live; what changed during the gap comes with the
        # reconnection.
        assert kinds(records.about(killed)) == ["container_added", "container_removed"]
        removed = records.about(killed)[1]
        assert isinstance(removed, ContainerRemoved)
        assert removed.container == added(records.seen, killed)
        assert kinds(records.about(doomed)) == ["container_added", "container_removed"]
        assert kinds(records.about(restarting)) == [
            "container_added",
            "container_removed",
            "container_added",
        ]
        again = records.about(restarting)[2]
        assert isinstance(again, ContainerAdded)
        assert again.container.pid != first_restarting.pid
        assert_matches_the_kernel(again.container)
        assert kinds(records.about(in_gap)) == ["container_added"]
        assert kinds(records.about(live)) == ["container_added"]
        order = [
            getattr(getattr(r, "container", None), "name", r.TYPE)
            for r in records.seen
            if not hasattr(r, "container") or r.container.name in (in_gap, live)
        ]
        assert order == ["source_disconnected", in_gap, "source_reconnected", live]
        ours = {c.name for c in source.known.values() if c.name.startswith(containers.prefix)}
        assert ours == {restarting, in_gap, live}
        nursery.cancel_scope.cancel()
