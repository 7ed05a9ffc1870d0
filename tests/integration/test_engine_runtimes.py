"""The whole engine following several runtimes at once: podman's containers, Docker's,
containerd's (`ctr run` and CRI pods) side by side, each named with its runtime, and a
containerd restart mid-run that loses nothing."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import trio

from tests.runtimes.cri import SOCKET, Cri, Pod, ctr
from tests.support.constants import EXAMPLES, GADGETS
from tests.support.docker import Containers
from tests.support.process import engine_process
from tests.support.recorder import Record, Recorder, recorded, unpaired
from tests.support.runtimes import (
    CtrContainers,
    Podman,
    ctr_exec,
    ipv4_of,
    pod_exec,
    start_containerd,
    stop_containerd,
)

pytestmark = [pytest.mark.integration, pytest.mark.runtimes]

EXECSNOOP = EXAMPLES / "execsnoop.c"
ICMP_TC = GADGETS / "icmp_echo.c"
ICMP_SOCKET = GADGETS / "icmp_socket.c"


def added(records: list[Record], container_id: str, runtime: str) -> Record | None:
    return next(
        (
            r["container"]
            for r in records
            if r["type"] == "container_added"
            and (r["container"]["id"], r["container"]["runtime"]) == (container_id, runtime)
        ),
        None,
    )


async def reported(rec: Recorder, container_id: str, runtime: str = "containerd") -> Record:
    """The container's JSON object, once it is reported."""
    return await rec.until(lambda: added(rec.records, container_id, runtime), 15, container_id)


def execs(records: list[Record], filename: str) -> list[Record]:
    return [
        r
        for r in records
        if r["type"] == "event" and r["source"] == "events" and r["data"]["filename"] == filename
    ]


def attached_in(rec: Recorder, netns: int) -> set[str]:
    return {r["program"] for r in rec.of_type("attached") if r["netns"] == netns}


async def all_attached(rec: Recorder, container: Record, programs: set[str]) -> None:
    """Until every one of ``programs`` is attached in the container's netns."""
    netns = container["netns"]
    await rec.until(lambda: attached_in(rec, netns) == programs, 15, f"{netns} attached")


def echo_counts(rec: Recorder, gadget: str) -> dict[tuple[str, int], int]:
    """ICMP echo packets by (container name, type) as ``gadget`` counted them."""
    out: dict[tuple[str, int], int] = {}
    for e in rec.events("echoes"):
        if e["gadget"] == gadget:
            key = (e["container"]["name"] if e["container"] else "?", e["data"]["type"])
            out[key] = out.get(key, 0) + 1
    return out


async def test_podman_containers_are_named_with_runtime_podman(
    podman_containers: Podman,
) -> None:
    programs = {"into_container", "out_of_container", "icmp_socket"}
    with trio.fail_after(90):
        async with recorded(
            EXECSNOOP, ICMP_TC, ICMP_SOCKET, select=["runtime=podman"], iter_interval=3600
        ) as (_, rec):
            # podman gives no CAP_NET_RAW by default: ping needs it.
            ids = [
                await trio.to_thread.run_sync(podman_containers.run, r, "--cap-add=NET_RAW")
                for r in ("a", "b")
            ]
            for container_id in ids:
                await all_attached(rec, await reported(rec, container_id, "podman"), programs)
            path = await trio.to_thread.run_sync(podman_containers.netns_path, "b")
            address = await trio.to_thread.run_sync(ipv4_of, path)
            await trio.to_thread.run_sync(
                podman_containers.exec, "a", "ping", "-c", "2", "-i", "0.2", address
            )
            await rec.until(
                lambda: echo_counts(rec, "icmp_socket").get((podman_containers.name("a"), 0)) == 2,
                10,
                "the replies back in a",
            )
            await rec.until(lambda: execs(rec.records, "/bin/ping"), 10, "the ping's exec")
    a, b = podman_containers.name("a"), podman_containers.name("b")
    (ping,) = execs(rec.records, "/bin/ping")
    assert (ping["container"]["name"], ping["container"]["runtime"]) == (a, "podman")
    assert "k8s" not in ping["container"]
    expected = {(a, 8): 2, (b, 8): 2, (b, 0): 2, (a, 0): 2}
    assert echo_counts(rec, "icmp_socket") == expected
    assert echo_counts(rec, "icmp_echo") == expected


@pytest.mark.docker
async def test_docker_containerd_and_podman_at_once_each_named_with_its_runtime(
    containers: Containers, ctr_containers: CtrContainers, cri: Cri, podman_containers: Podman
) -> None:
    """Through the CLI. The `ctr run` container takes the Docker container's id: ids are a
    runtime's own, and the two stay two containers."""
    in_docker = await containers.run("docker")
    docker_id = await containers.inspect(in_docker, "{{.Id}}")
    await trio.to_thread.run_sync(ctr_containers.run, docker_id)
    await trio.to_thread.run_sync(podman_containers.run, "podman")
    in_podman = podman_containers.name("podman")
    pod = await trio.to_thread.run_sync(cri.run_pod, "web-1", "three", None)
    app = await trio.to_thread.run_sync(cri.start_container, pod, "app")
    # An id selects in both runtimes; the pod by its namespace; podman's by name.
    selection = ["id=" + docker_id, "k8s.namespace=three", f"name={podman_containers.prefix}*"]
    args = [a for s in selection for a in ("--select", s)]
    with trio.fail_after(90):
        async with engine_process(str(EXECSNOOP), *args, "--containerd-socket", SOCKET) as proc:
            await proc.line("attached")
            await proc.until(
                lambda: all(
                    added(proc.records, i, r)
                    for i, r in (
                        (docker_id, "docker"),
                        (docker_id, "containerd"),
                        (app, "containerd"),
                    )
                ),
                15,
                "every container reported",
            )
            await containers.exec(in_docker, "/bin/true")
            await trio.to_thread.run_sync(ctr_exec, docker_id, "/bin/true")
            await trio.to_thread.run_sync(pod_exec, app, "/bin/true")
            await trio.to_thread.run_sync(podman_containers.exec, "podman", "/bin/true")
            await trio.to_thread.run_sync(podman_containers.exec, "podman", "/bin/echo")
            await proc.until(lambda: execs(proc.records, "/bin/echo"), 10, "the last exec")
    named = sorted(
        (e["container"]["runtime"], e["container"]["name"])
        for e in execs(proc.records, "/bin/true")
    )
    assert named == sorted(
        [
            ("containerd", docker_id),
            ("containerd", "web-1/app"),
            ("docker", in_docker),
            ("podman", in_podman),
        ]
    )
    connected = {r["runtime"] for r in proc.of_type("source_connected")}
    assert connected == {"docker", "containerd", "podman"}


def sandbox_netns(pod: Pod) -> int:
    """The inode of a pod's netns, from its sandbox's task (containerd's view)."""
    tasks = ctr("task", "ls", namespace="k8s.io").splitlines()[1:]
    pid = next(int(line.split()[1]) for line in tasks if line.split()[0] == pod.id)
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def removed_ids(rec: Recorder) -> set[str]:
    return {r["container"]["id"] for r in rec.of_type("container_removed")}


def from_runtime(rec: Recorder, kind: str, runtime: str) -> list[Record]:
    return [r for r in rec.of_type(kind) if r["runtime"] == runtime]


async def test_a_containerd_restart_mid_run_loses_nothing(cri: Cri, tmp_path: Path) -> None:
    """The engine reaches containerd through a link that the test removes while it restarts
    containerd, and puts back later: pods removed and made in that gap are all reported.
    The identify timeout is shorter than the gap, so the new pod's netns is given up while
    pending, and must be traced (and its packets delivered) once containerd names it."""
    gate = tmp_path / "containerd.sock"
    gate.symlink_to(SOCKET)
    ns = f"restart-{uuid.uuid4().hex[:6]}"
    steady = await trio.to_thread.run_sync(cri.run_pod, "steady", ns, None)
    await trio.to_thread.run_sync(cri.start_container, steady, "app")
    with trio.fail_after(120):
        async with recorded(
            EXECSNOOP,
            ICMP_SOCKET,
            select=[f"k8s.namespace={ns}"],
            containerd_socket=str(gate),
            identify_timeout=1.0,
            iter_interval=3600,
        ) as (_, rec):
            steady_sandbox = await reported(rec, steady.id)
            gone = await trio.to_thread.run_sync(cri.run_pod, "gone", ns, None)
            gone_app = await trio.to_thread.run_sync(cri.start_container, gone, "app")
            gone_netns = (await reported(rec, gone.id))["netns"]
            await rec.until(lambda: attached_in(rec, gone_netns), 15, "gone attached")

            gate.unlink()
            await trio.to_thread.run_sync(stop_containerd)
            await rec.until(lambda: from_runtime(rec, "source_disconnected", "containerd"), 15)
            await trio.to_thread.run_sync(start_containerd)
            await trio.to_thread.run_sync(cri.remove_pod, gone)
            new = await trio.to_thread.run_sync(cri.run_pod, "new", ns, None)
            new_app = await trio.to_thread.run_sync(cri.start_container, new, "app")
            new_netns = await trio.to_thread.run_sync(sandbox_netns, new)
            # Given up: traced speculatively, then detached when nobody claimed it in time.
            await rec.until(
                lambda: [r for r in rec.of_type("detached") if r["netns"] == new_netns],
                15,
                "the new pod's netns given up",
            )
            assert not added(rec.records, new.id, "containerd")
            assert gone.id not in removed_ids(rec)

            gate.symlink_to(SOCKET)
            await rec.until(lambda: from_runtime(rec, "source_reconnected", "containerd"), 15)
            await reported(rec, new_app)
            await rec.until(
                lambda: [
                    r
                    for r in rec.of_type("attached")
                    if r["netns"] == new_netns and not r["speculative"]
                ],
                15,
                "the new pod attached again",
            )
            await trio.to_thread.run_sync(pod_exec, new_app, "/bin/true")
            steady_path = f"/proc/{steady_sandbox['pid']}/ns/net"
            address = await trio.to_thread.run_sync(ipv4_of, steady_path)
            await trio.to_thread.run_sync(pod_exec, new_app, "ping", "-c", "2", address)
            await rec.until(
                lambda: echo_counts(rec, "icmp_socket").get(("new", 0)) == 2, 10, "the replies"
            )
    removed = {r["container"]["id"]: r["reason"] for r in rec.of_type("container_removed")}
    assert removed[gone.id] == removed[gone_app] == "gone while disconnected"
    assert steady.id not in removed
    (true_exec,) = execs(rec.records, "/bin/true")
    assert true_exec["container"]["name"] == "new/app"
    assert echo_counts(rec, "icmp_socket") == {
        ("new", 8): 2,
        ("steady", 8): 2,
        ("steady", 0): 2,
        ("new", 0): 2,
    }
    # The steady pod stayed attached across the gap (its detach: the engine's stop).
    assert rec.lifecycles(netns=steady_sandbox["netns"]) == {
        "icmp_socket": ["attached", "detached"]
    }
    assert [r["runtime"] for r in rec.of_type("source_disconnected")] == ["containerd"]
    assert not unpaired(rec.records)
