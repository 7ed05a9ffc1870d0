"""DockerSource against the real daemon and real containers of the locally built test image."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import docker
import docker.errors
import pytest
import trio
import trio.testing

import engine.records as rec
from engine.sources.containers import Container
from engine.sources.docker import DockerSource, default_client
from tests.support.commands import adocker
from tests.support.constants import TEST_IMAGE
from tests.support.docker import Containers, start_dockerd, stop_dockerd
from tests.support.sources import Records, running

pytestmark = [pytest.mark.integration, pytest.mark.docker]


async def started(containers: Containers, role: str, *options: str) -> str:
    """Start a container; its id."""
    name = await containers.run(role, options=options)
    return await containers.inspect(name, "{{.Id}}")


def added(records: Sequence[rec.ContainerEvent], name: str) -> Container | None:
    for record in records:
        if isinstance(record, rec.ContainerAdded) and record.container.name == name:
            return record.container
    return None


def kinds(records: Sequence[rec.ContainerEvent]) -> list[str]:
    return [r.TYPE for r in records]


async def expect_added(records: Records, name: str) -> Container:
    return await records.until(lambda: added(records.seen, name), 10, f"{name} added")


def assert_matches_the_kernel(container: Container) -> None:
    ns = Path("/proc") / str(container.pid) / "ns"
    assert container.netns_inode == os.stat(ns / "net").st_ino
    assert container.mntns_inode == os.stat(ns / "mnt").st_ino
    assert container.mntns_inode != os.stat("/proc/self/ns/mnt").st_ino


async def test_containers_before_and_after_start_and_rm_f(containers: Containers) -> None:
    before_id = await started(containers, "before", "--label", "app=db")
    source = DockerSource()
    async with running(source) as records:
        # What runs at start is handed back by start(), not sent: nobody reads the channel
        # before start() returns.
        before = added(records.snapshot, containers.name("before"))
        assert before is not None
        assert before.id == before_id
        assert before.label_map == {"app": "db"}
        assert before.image == TEST_IMAGE
        assert_matches_the_kernel(before)

        after_id = await started(containers, "after")
        after = await expect_added(records, containers.name("after"))
        assert after.id == after_id
        assert after.shares_netns_with is None
        assert after.netns_inode != before.netns_inode
        assert_matches_the_kernel(after)
        assert after.netns_path is not None
        assert os.stat(after.netns_path).st_ino == after.netns_inode

        await containers.remove(containers.name("after"))
        await records.until(
            lambda: (
                kinds(records.about(containers.name("after")))
                == ["container_added", "container_removed"]
            ),
            10,
            "after removed",
        )
        assert after_id not in source.known
        assert before_id in source.known


async def test_pause_unpause_rename(containers: Containers) -> None:
    async with running(DockerSource()) as records:
        p = await containers.run("p")
        await expect_added(records, p)
        await adocker("pause", p)
        await adocker("unpause", p)
        await adocker("rename", p, containers.name("renamed"))
        await records.until(
            lambda: any(isinstance(r, rec.ContainerRenamed) for r in records.seen), 10, "rename"
        )
        ours = [r for r in records.seen if hasattr(r, "container") and r.container.id]
        ours = [r for r in ours if r.container.name.startswith(containers.prefix)]
        assert [type(r) for r in ours] == [
            rec.ContainerAdded,
            rec.ContainerPaused,
            rec.ContainerUnpaused,
            rec.ContainerRenamed,
        ]
        assert ours[1].container.paused and not ours[2].container.paused
        last = ours[3]
        assert isinstance(last, rec.ContainerRenamed)
        assert last.old_name == p
        assert last.container.name == containers.name("renamed")


async def test_containers_sharing_a_netns(containers: Containers) -> None:
    async with running(DockerSource()) as records:
        owner_id = await started(containers, "owner")
        await containers.run(
            "guest", options=["--network", f"container:{containers.name('owner')}"]
        )
        owner = await expect_added(records, containers.name("owner"))
        guest = await expect_added(records, containers.name("guest"))
        assert guest.netns_inode == owner.netns_inode
        assert guest.netns_inode is not None
        assert guest.shares_netns_with == owner_id
        assert owner.shares_netns_with is None
        assert guest.mntns_inode != owner.mntns_inode
        assert guest.cgroup_id != owner.cgroup_id or guest.cgroup_id is None


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
    container_id = await started(containers, "cg")
    client = docker.APIClient()
    try:
        inspected = await trio.to_thread.run_sync(lambda: client.inspect_container(container_id))
    finally:
        client.close()
    container = Container.from_docker(inspected)
    assert container.cgroup_id == expected_cgroup_id(container.pid)


async def test_events_come_through_while_the_shared_thread_pool_is_full(
    containers: Containers,
) -> None:
    """The source's worker threads are its own: an application that keeps trio's shared
    thread limiter full, with more calls waiting (a benchmark starting 100 containers did),
    does not hold back what the runtime reports (each event's read and inspection used to
    queue there behind every call waiting)."""
    shared = trio.to_thread.current_default_thread_limiter()
    release = threading.Event()
    async with running(DockerSource()) as records, trio.open_nursery() as busy:
        try:
            for _ in range(int(shared.total_tokens) + 5):
                busy.start_soon(trio.to_thread.run_sync, release.wait, None)
            with trio.fail_after(10):
                await trio.testing.wait_all_tasks_blocked()
            assert shared.statistics().tasks_waiting >= 5
            await trio.to_thread.run_sync(
                lambda: containers.start("busy"), limiter=trio.CapacityLimiter(1)
            )
            await expect_added(records, containers.name("busy"))
        finally:
            release.set()


async def test_absent_daemon_is_not_an_error() -> None:
    attempts = 0
    retried = trio.Event()

    def unreachable() -> docker.APIClient:
        nonlocal attempts
        attempts += 1
        if attempts == 5:
            trio.from_thread.run_sync(retried.set)
        raise docker.errors.DockerException("no daemon at unix:///nonexistent/engine-test.sock")

    source = DockerSource(client_factory=unreachable, min_backoff=0.05, max_backoff=0.2)
    async with running(source) as records:
        await records.until(lambda: records.seen, 10, "disconnected")
        with trio.fail_after(10):
            await retried.wait()
        assert kinds(records.seen) == ["source_disconnected"]
        assert isinstance(records.seen[0], rec.SourceDisconnected)
        assert "cannot connect" in records.seen[0].error


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


async def wait_running(containers: Containers, name: str) -> None:
    with trio.fail_after(30):
        # Docker sends the test no notice: look again.
        while await containers.inspect(name, "{{.State.Running}}") != "true":  # noqa: ASYNC110
            await trio.sleep(0.1)


async def test_daemon_restart_loses_nothing(containers: Containers, restores_dockerd: None) -> None:
    gate = Gate()
    source = DockerSource(client_factory=gate.client, max_backoff=0.5)
    killed, restarting, doomed, in_gap, live = (
        containers.name(n) for n in ("killed", "restarting", "doomed", "in-gap", "live")
    )
    async with running(source) as records:
        await containers.run("killed")
        await containers.run("restarting", options=["--restart=always"])
        await containers.run("doomed", options=["--restart=always"])
        for name in (killed, restarting, doomed):
            await expect_added(records, name)
        first_restarting = added(records.seen, restarting)
        assert first_restarting is not None

        gate.close()
        await stop_dockerd()
        await records.until(
            lambda: any(isinstance(r, rec.SourceDisconnected) for r in records.seen),
            10,
            "disconnection",
        )
        with trio.fail_after(60):
            await trio.to_thread.run_sync(start_dockerd)
        # While the source is still disconnected: the daemon brings back the containers with a
        # restart policy; one of them is removed again, and a new one starts.
        await wait_running(containers, restarting)
        await wait_running(containers, doomed)
        await containers.remove(doomed)
        await containers.run("in-gap")
        gate.open()
        await records.until(
            lambda: any(isinstance(r, rec.SourceReconnected) for r in records.seen),
            30,
            "reconnection",
        )
        await containers.run("live")
        await expect_added(records, live)

        # A graceful stop reports the deaths live; what changed during the gap comes with the
        # reconnection.
        assert kinds(records.about(killed)) == ["container_added", "container_removed"]
        removed = records.about(killed)[1]
        assert isinstance(removed, rec.ContainerRemoved)
        assert removed.container == added(records.seen, killed)
        assert kinds(records.about(doomed)) == ["container_added", "container_removed"]
        assert kinds(records.about(restarting)) == [
            "container_added",
            "container_removed",
            "container_added",
        ]
        again = records.about(restarting)[2]
        assert isinstance(again, rec.ContainerAdded)
        assert again.container.pid != first_restarting.pid
        assert_matches_the_kernel(again.container)
        assert kinds(records.about(in_gap)) == ["container_added"]
        assert kinds(records.about(live)) == ["container_added"]
        order = [
            getattr(getattr(r, "container", None), "name", r.TYPE)
            for r in records.seen
            if not hasattr(r, "container") or r.container.name in (in_gap, live)
        ]
        assert order == [
            "source_connected",
            "source_disconnected",
            in_gap,
            "source_reconnected",
            live,
        ]
        assert {r.runtime for r in records.seen if not hasattr(r, "container")} == {"docker"}
        ours = {c.name for c in source.known.values() if c.name.startswith(containers.prefix)}
        assert ours == {restarting, in_gap, live}


def test_default_client_leaves_nothing_open_without_a_daemon(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The SDK's own failed connect would hold its socket until a garbage collection: the leak
    # check fails this test if the engine's client lets it.
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/engine-test.sock")
    for _ in range(3):
        with pytest.raises(docker.errors.DockerException, match="cannot reach"):
            default_client()
