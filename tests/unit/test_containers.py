"""Container records built from captured `docker inspect` data, and their JSON form."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from engine.records import (
    ContainerAdded,
    ContainerPaused,
    ContainerRemoved,
    ContainerRenamed,
    SourceConnected,
    SourceDisconnected,
    SourceReconnected,
)
from engine.sources.containers import Container
from engine.sources.docker import transition

DATA = Path(__file__).parent / "data"
BRIDGE_ID = "1e869f5398f21496d1d734963e8b9f31aede17d38d3826e5ce3f0675ab3c7767"


def inspect(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DATA / name).read_text())
    return loaded


def test_from_docker_bridge_network(tmp_path: Path) -> None:
    # An empty proc directory: the captured process no longer exists.
    container = Container.from_docker(inspect("docker_inspect_bridge.json"), proc=tmp_path)
    assert container.id == BRIDGE_ID
    assert container.short_id == BRIDGE_ID[:12]
    assert container.name == "engine-test-fixture"
    assert container.image == "engine-test:latest"
    assert container.label_map == {"app": "db", "tier": "backend"}
    assert container.pid == 968
    assert container.network_mode == "default"
    assert container.shares_netns_with is None
    assert container.netns_path == "/var/run/docker/netns/adeb60bffde9"
    assert container.paused is False
    assert container.runtime == "docker"
    assert (container.netns_inode, container.mntns_inode, container.cgroup_id) == (
        None,
        None,
        None,
    )


def test_from_docker_shared_netns(tmp_path: Path) -> None:
    container = Container.from_docker(inspect("docker_inspect_shared_netns.json"), proc=tmp_path)
    assert container.name == "engine-test-fixture-peer"
    assert container.network_mode == f"container:{BRIDGE_ID}"
    assert container.shares_netns_with == BRIDGE_ID
    # Docker gives no SandboxKey to a container that borrows another's netns.
    assert container.netns_path == str(tmp_path / "1032" / "ns" / "net")
    assert container.labels == ()


def test_from_docker_reads_namespaces_of_a_live_process() -> None:
    data = inspect("docker_inspect_bridge.json")
    data["State"]["Pid"] = os.getpid()
    container = Container.from_docker(data)
    assert container.netns_inode == os.stat("/proc/self/ns/net").st_ino
    assert container.mntns_inode == os.stat("/proc/self/ns/mnt").st_ino


def test_host_network_and_paused() -> None:
    data = inspect("docker_inspect_bridge.json")
    data["HostConfig"]["NetworkMode"] = "host"
    data["State"]["Paused"] = True
    data["State"]["Pid"] = 0
    container = Container.from_docker(data)
    assert container.shares_netns_with == "host"
    assert container.paused is True
    assert container.netns_inode is None


def test_labels_compare_whatever_their_order() -> None:
    one = Container(id="a", name="n", image="i", pid=1, labels={"x": "1", "y": "2"})
    other = Container(id="a", name="n", image="i", pid=1, labels=(("y", "2"), ("x", "1")))
    assert one == other
    assert hash(one) == hash(other)


def test_json_forms(tmp_path: Path) -> None:
    container = Container.from_docker(inspect("docker_inspect_bridge.json"), proc=tmp_path)
    body = container.to_json()
    assert body["id"] == BRIDGE_ID
    assert body["short_id"] == BRIDGE_ID[:12]
    assert body["labels"] == {"app": "db", "tier": "backend"}
    assert {"name", "image", "pid", "netns", "mntns", "cgroup_id", "runtime"} <= body.keys()
    assert json.loads(json.dumps(body)) == body
    assert ContainerAdded(container).to_json() == {"type": "container_added", "container": body}
    assert ContainerRemoved(container, "die").to_json()["reason"] == "die"
    assert ContainerRenamed(container, "old").to_json()["type"] == "container_renamed"
    gap = SourceDisconnected("docker", 1.5, "refused", "docker").to_json()
    assert gap == {
        "type": "source_disconnected",
        "source": "docker",
        "at": 1.5,
        "error": "refused",
        "runtime": "docker",
    }
    back = SourceReconnected("podman", 1.5, 2.0, "podman").to_json()
    assert back == {
        "type": "source_reconnected",
        "source": "podman",
        "disconnected_at": 1.5,
        "at": 2.0,
        "runtime": "podman",
    }
    first = SourceConnected("containerd", 3.0, "containerd").to_json()
    assert first == {
        "type": "source_connected",
        "source": "containerd",
        "at": 3.0,
        "runtime": "containerd",
    }


def test_transitions_between_known_and_current() -> None:
    base = Container(id="a", name="web", image="i", pid=5, netns_inode=7)
    assert transition(None, base, "start") == [ContainerAdded(base)]
    assert transition(base, None, "die") == [ContainerRemoved(base, "die")]
    assert transition(base, base, "start") == []
    assert transition(None, None, "destroy") == []
    renamed_paused = Container(id="a", name="api", image="i", pid=5, netns_inode=7, paused=True)
    assert transition(base, renamed_paused, "rename") == [
        ContainerRenamed(renamed_paused, "web"),
        ContainerPaused(renamed_paused),
    ]
    restarted = Container(id="a", name="web", image="i", pid=9, netns_inode=8)
    assert transition(base, restarted, "start") == [
        ContainerRemoved(base, "restarted"),
        ContainerAdded(restarted),
    ]
