"""containerd's records as Containers: kubelet's labels, the pod sandbox and its netns."""

from __future__ import annotations

from pathlib import Path

from engine.sources.containerd_api import ContainerRecord, Envelope, TaskRecord
from engine.sources.containerd_model import (
    by_sandbox_first,
    container_from_containerd,
    k8s_metadata,
)

UID = "0b8f7c4e-1111-2222-3333-444455556666"
POD_LABELS = {
    "io.kubernetes.pod.name": "web-1",
    "io.kubernetes.pod.namespace": "shop",
    "io.kubernetes.pod.uid": UID,
}
NETNS = "/var/run/netns/cni-1234"
SANDBOX = ContainerRecord(
    namespace="k8s.io",
    id="s" * 64,
    image="docker.io/library/pause:latest",
    labels={**POD_LABELS, "app": "web", "io.cri-containerd.kind": "sandbox"},
    annotations={"io.kubernetes.cri.container-type": "sandbox"},
    network=NETNS,
)
APP = ContainerRecord(
    namespace="k8s.io",
    id="a" * 64,
    image="docker.io/library/app:1",
    labels={
        **POD_LABELS,
        "io.kubernetes.container.name": "app",
        "io.cri-containerd.kind": "container",
    },
    annotations={"io.kubernetes.cri.sandbox-id": "s" * 64},
    network="/proc/42/ns/net",
)
RUNNING = TaskRecord(pid=42, status="RUNNING")


def test_the_sandbox_is_the_pod() -> None:
    sandbox = container_from_containerd(SANDBOX, RUNNING, proc=Path("/nonexistent"))
    assert sandbox.name == "web-1"
    assert sandbox.runtime == "containerd"
    assert sandbox.netns_path == NETNS
    assert sandbox.shares_netns_with is None
    assert sandbox.to_json()["k8s"] == {
        "namespace": "shop",
        "pod": "web-1",
        "pod_uid": UID,
        "container": None,
        "labels": {"app": "web"},
    }


def test_a_pod_container_joins_its_sandbox() -> None:
    app = container_from_containerd(APP, RUNNING, sandbox=SANDBOX, proc=Path("/nonexistent"))
    assert app.name == "web-1/app"
    assert app.shares_netns_with == SANDBOX.id
    assert app.network_mode == f"container:{SANDBOX.id}"
    # The pod's file reaches the netns for as long as the pod lives, whichever process dies.
    assert app.netns_path == NETNS
    assert app.k8s is not None
    assert (app.k8s.container, dict(app.k8s.labels)) == ("app", {"app": "web"})


def test_without_its_sandbox_a_pod_container_has_no_pod_labels() -> None:
    k8s = k8s_metadata(APP, None)
    assert k8s is not None
    assert (k8s.pod, k8s.container, k8s.labels) == ("web-1", "app", ())


def test_a_plain_containerd_container() -> None:
    plain = ContainerRecord("default", "web", "img", {}, {}, network="")
    container = container_from_containerd(plain, RUNNING, proc=Path("/proc"))
    assert (container.name, container.k8s, container.shares_netns_with) == ("web", None, None)
    assert container.netns_path == "/proc/42/ns/net"
    assert "k8s" not in container.to_json()


def test_no_network_namespace_in_the_spec_is_the_host_network() -> None:
    host = ContainerRecord("default", "h", "img", {}, {}, network=None)
    container = container_from_containerd(host, RUNNING, proc=Path("/nonexistent"))
    assert (container.network_mode, container.shares_netns_with) == ("host", "host")


def test_sandboxes_are_listed_first() -> None:
    assert by_sandbox_first({APP.id: APP, SANDBOX.id: SANDBOX}) == [SANDBOX, APP]


def test_task_states() -> None:
    assert TaskRecord(1, "RUNNING").running and not TaskRecord(1, "RUNNING").paused
    assert TaskRecord(1, "PAUSED").running and TaskRecord(1, "PAUSED").paused
    assert not TaskRecord(1, "CREATED").running
    assert not TaskRecord(1, "STOPPED").running
    assert not TaskRecord(0, "RUNNING").running


def test_an_exec_exit_is_not_the_container_s() -> None:
    assert not Envelope("default", "/tasks/exit", "web", exec_id="probe").concerns_init
    assert Envelope("default", "/tasks/exit", "web", exec_id="web").concerns_init
    assert Envelope("default", "/tasks/start", "web").concerns_init
