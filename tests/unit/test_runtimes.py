"""How each runtime source reports its connection, and which runtimes the engine follows."""

from __future__ import annotations

from engine.records import SourceConnected, SourceDisconnected, SourceReconnected
from engine.sources.connection import Connection
from engine.sources.containerd import ContainerdSource
from engine.sources.docker import DockerSource
from engine.sources.runtimes import Runtimes


def test_connected_then_lost_then_back() -> None:
    connection = Connection("containerd", "containerd")
    first = connection.connected()
    assert isinstance(first, SourceConnected)
    assert (first.source, first.runtime) == ("containerd", "containerd")
    assert connection.connected() is None  # said once
    lost = connection.lost("UNAVAILABLE")
    assert isinstance(lost, SourceDisconnected)
    assert (lost.error, lost.runtime) == ("UNAVAILABLE", "containerd")
    assert connection.lost("still away") is None  # one record per gap
    back = connection.connected()
    assert isinstance(back, SourceReconnected)
    assert (back.disconnected_at, back.runtime) == (lost.at, "containerd")
    assert connection.connected() is None


def test_absent_at_start_then_there() -> None:
    connection = Connection("podman", "podman")
    absent = connection.lost("no socket")
    assert isinstance(absent, SourceDisconnected)
    back = connection.connected()
    assert isinstance(back, SourceReconnected) and back.disconnected_at == absent.at


def test_every_runtime_is_followed_and_moby_left_to_docker() -> None:
    docker, containerd, podman = Runtimes(
        containerd_socket="/run/test/containerd.sock", podman_socket="/run/test/podman.sock"
    ).sources()
    assert isinstance(docker, DockerSource) and docker.runtime == "docker"
    assert isinstance(containerd, ContainerdSource)
    assert containerd.socket == "/run/test/containerd.sock"
    assert containerd.skip_namespaces == frozenset({"moby"})
    assert isinstance(podman, DockerSource)
    assert (podman.name, podman.runtime) == ("podman", "podman")
