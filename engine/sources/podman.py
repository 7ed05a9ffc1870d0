"""Follow rootful podman's containers through its API service.

podman has no daemon: its containers are followed through the API service (`podman system
service`, which a node runs from podman.socket) on its usual socket. That service speaks
Docker's API, so the Docker source follows it unchanged: the same listing, the same events
with replay from the last one seen (`since`), the same inspection. Chosen over reading
`podman events` from a subprocess, which needs a podman binary of the host's version in the
engine's own file system, and an exec of `podman inspect` (with podman's locks) per event.
Its containers' netns files are named ones, under /run/netns.
"""

from __future__ import annotations

from engine.sources.docker import DockerSource, client_factory

DEFAULT_SOCKET = "/run/podman/podman.sock"


def podman_source(socket: str = DEFAULT_SOCKET) -> DockerSource:
    """A source for the podman API service on `socket`; its containers have runtime "podman"."""
    return DockerSource(client_factory=client_factory(socket), name="podman", runtime="podman")
