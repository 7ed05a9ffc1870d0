"""ContainerdSource against the tests' own containerd (scripts/start-containerd): pods made
through the CRI the way kubelet makes them, `ctr run` containers, and a daemon restart."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence

import attrs
import pytest
import trio

from engine.records import ContainerEvent, SourceDisconnected, SourceReconnected
from engine.sources.containerd import ContainerdSource
from engine.sources.containerd_api import ContainerdClient
from engine.sources.containers import Container
from tests.runtimes.cri import SOCKET, Cri, Pod, ctr, daemon_pid
from tests.support.runtimes import CtrContainers, start_containerd, stop_containerd
from tests.support.sources import added, removed, running

pytestmark = [pytest.mark.integration, pytest.mark.runtimes]


def ctr_run(made: CtrContainers, short: str) -> str:
    return made.run(f"engine-test-{uuid.uuid4().hex[:8]}-{short}")


def about(records: Sequence[ContainerEvent], ids: set[str]) -> list[Container]:
    """The containers of the records about `ids`, in order."""
    found = (getattr(r, "container", None) for r in records)
    return [c for c in found if c is not None and c.id in ids]


def in_kernel(container: Container) -> None:
    """The namespaces the source reported are the process's."""
    ns = f"/proc/{container.pid}/ns"
    assert container.netns_inode == os.stat(f"{ns}/net").st_ino
    assert container.mntns_inode == os.stat(f"{ns}/mnt").st_ino
    assert container.netns_inode != os.stat("/proc/self/ns/net").st_ino


async def test_a_pod_with_two_containers_shares_one_netns(cri: Cri) -> None:
    namespace = f"shop-{uuid.uuid4().hex[:6]}"
    source = ContainerdSource(socket=SOCKET)
    async with running(source, buffer=256) as records:
        pod = await trio.to_thread.run_sync(cri.run_pod, "web-1", namespace, {"app": "web"})
        app = await trio.to_thread.run_sync(cri.start_container, pod, "app")
        sidecar = await trio.to_thread.run_sync(cri.start_container, pod, "sidecar")
        ours = {pod.id, app, sidecar}
        await records.until(lambda: ours <= set(added(records.seen)), 10, "the pod's containers")
        got = added(records.seen)
        sandbox = got[pod.id]
        # The sandbox comes first: it names the pod's netns.
        assert [c.id for c in about(records.seen, ours)] == [pod.id, app, sidecar]
        for container in got.values():
            assert container.runtime == "containerd"
            in_kernel(container)
        assert sandbox.name == "web-1"
        assert got[app].name == "web-1/app"
        assert sandbox.k8s is not None and got[app].k8s is not None
        assert sandbox.k8s.to_json() == {
            "namespace": namespace,
            "pod": "web-1",
            "pod_uid": pod.uid,
            "container": None,
            "labels": {"app": "web"},
        }
        assert got[app].to_json()["k8s"] == {**sandbox.k8s.to_json(), "container": "app"}
        assert got[sidecar].k8s == attrs.evolve(sandbox.k8s, container="sidecar")
        # One netns for the pod, its file the sandbox's (from CNI), shared by the containers.
        assert sandbox.netns_path is not None
        assert sandbox.netns_path.startswith("/var/run/netns/cni-")
        assert os.stat(sandbox.netns_path).st_ino == sandbox.netns_inode
        for container_id in (app, sidecar):
            assert got[container_id].netns_inode == sandbox.netns_inode
            assert got[container_id].netns_path == sandbox.netns_path
            assert got[container_id].shares_netns_with == pod.id
        assert sandbox.shares_netns_with is None
        # Each container has its own mount namespace (what execs are matched by).
        assert len({c.mntns_inode for c in got.values()}) == 3

        await trio.to_thread.run_sync(cri.remove_pod, pod)
        await records.until(lambda: ours <= set(removed(records.seen)), 10, "the pod removed")
        assert not ours & {container_id for _, container_id in source.known}


async def test_ctr_containers_in_namespace_default(ctr_containers: CtrContainers) -> None:
    before = ctr_run(ctr_containers, "before")
    source = ContainerdSource(socket=SOCKET)
    async with running(source, buffer=256) as records:
        assert before in added(records.snapshot)
        listed = added(records.snapshot)[before]
        assert (listed.name, listed.runtime, listed.k8s) == (before, "containerd", None)
        assert "k8s" not in listed.to_json() and listed.to_json()["runtime"] == "containerd"
        assert listed.netns_path == f"/proc/{listed.pid}/ns/net"
        in_kernel(listed)

        after = ctr_run(ctr_containers, "after")
        await records.until(lambda: after in added(records.seen), 10, "after added")
        # An exec's exit is not the container's: nothing about `before` until the end.
        ctr("task", "exec", "--exec-id", "probe", before, "true")
        ctr("task", "kill", "-s", "KILL", after)
        await records.until(lambda: after in removed(records.seen), 10, "after removed")
        assert removed(records.seen)[after].reason == "exit"
        assert about(records.sent, {before}) == []
        assert ("default", before) in source.known
        assert ("default", after) not in source.known


class Gate:
    """A client factory the test can close: while closed, the source cannot reconnect."""

    def __init__(self) -> None:
        self.open = True

    def __call__(self, socket: str) -> ContainerdClient:
        if not self.open:
            raise OSError("closed by the test")
        return ContainerdClient(socket)


async def test_a_containerd_restart_loses_nothing(cri: Cri, ctr_containers: CtrContainers) -> None:
    """Pods removed and made while the source is away are reported when it is back;
    containers that ran through the restart (their tasks outlive the daemon) change nothing."""
    steady = ctr_run(ctr_containers, "steady")
    gone = await trio.to_thread.run_sync(cri.run_pod, "gone", "restart", None)
    gone_app = await trio.to_thread.run_sync(cri.start_container, gone, "app")
    gate = Gate()
    source = ContainerdSource(socket=SOCKET, client_factory=gate, min_backoff=0.05)
    try:
        async with running(source, buffer=256) as records:
            assert {steady, gone.id, gone_app} <= set(added(records.snapshot))

            gate.open = False
            await trio.to_thread.run_sync(stop_containerd)
            await records.until_seen(SourceDisconnected)
            await trio.to_thread.run_sync(start_containerd)
            await trio.to_thread.run_sync(cri.remove_pod, gone)
            new: Pod = await trio.to_thread.run_sync(cri.run_pod, "new", "restart", None)
            new_app = await trio.to_thread.run_sync(cri.start_container, new, "app")
            assert not about(records.sent, {gone.id, gone_app, new.id, new_app})

            gate.open = True
            await records.until_seen(SourceReconnected)
            after = records.since_gap()
            kinds = [type(r) for r in after]
            assert kinds[0] is SourceDisconnected and kinds[-1] is SourceReconnected
            assert {gone.id, gone_app} == set(removed(after))
            assert {r.reason for r in removed(after).values()} == {"gone while disconnected"}
            assert {new.id, new_app} == set(added(after))
            assert added(after)[new_app].k8s is not None
            assert not about(after, {steady})
    finally:
        if daemon_pid() is None:
            start_containerd()


async def test_no_daemon_is_a_gap_not_an_error(tmp_path: os.PathLike[str]) -> None:
    source = ContainerdSource(socket=os.path.join(tmp_path, "absent.sock"))
    async with running(source) as records:
        assert [type(r) for r in records.snapshot] == [SourceDisconnected]
        disconnected = records.snapshot[0]
        assert isinstance(disconnected, SourceDisconnected)
        assert disconnected.source == "containerd" and "UNAVAILABLE" in disconnected.error
