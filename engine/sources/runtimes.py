"""The container runtimes the engine follows at once, each through its own source: Docker,
containerd (every namespace but Docker's own) and podman. Each is found at its usual socket, or
where it is told; a runtime that is absent is not an error (its source keeps trying)."""

from __future__ import annotations

from typing import Protocol

import attrs
import trio

from engine.records import ContainerEvent
from engine.sources import containerd_api, podman
from engine.sources.containerd import DOCKER_NAMESPACE, ContainerdSource
from engine.sources.docker import DockerSource, client_factory


class ContainerSource(Protocol):
    """A runtime's source: started with its snapshot, then sends every change."""

    async def run(
        self,
        send_channel: trio.abc.SendChannel[ContainerEvent],
        *,
        task_status: trio.TaskStatus[list[ContainerEvent]] = ...,
    ) -> None: ...


@attrs.frozen
class Runtimes:
    """Where each runtime's API is. ``docker_socket`` None: where the docker CLI looks
    (``$DOCKER_HOST``, else /var/run/docker.sock)."""

    docker_socket: str | None = None
    containerd_socket: str = containerd_api.DEFAULT_SOCKET
    podman_socket: str = podman.DEFAULT_SOCKET

    def sources(self) -> list[ContainerSource]:
        """One source per runtime. containerd's namespace ``moby`` is Docker's own: the Docker
        source reports those containers (with Docker's names), so containerd's skips it."""
        return [
            DockerSource(client_factory=client_factory(self.docker_socket)),
            ContainerdSource(
                socket=self.containerd_socket, skip_namespaces=frozenset({DOCKER_NAMESPACE})
            ),
            podman.podman_source(self.podman_socket),
        ]


async def start_all(
    nursery: trio.Nursery,
    sources: list[ContainerSource],
    send: trio.MemorySendChannel[ContainerEvent],
) -> list[ContainerEvent]:
    """Start every source in ``nursery`` at once, each sending on a clone of ``send``; their
    snapshots, in the order of ``sources``."""
    snapshots: list[list[ContainerEvent]] = [[] for _ in sources]

    async def start(index: int, source: ContainerSource) -> None:
        snapshots[index] = await nursery.start(source.run, send.clone())

    async with send, trio.open_nursery() as starting:
        for index, source in enumerate(sources):
            starting.start_soon(start, index, source)
    return [record for snapshot in snapshots for record in snapshot]
