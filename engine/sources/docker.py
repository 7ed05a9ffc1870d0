"""Follow a Docker daemon's containers as an ordered stream of lifecycle records.

Every blocking docker SDK call runs in a worker thread of the source's own (connection.py) that
is abandoned on cancellation; the event stream is then closed from the trio side, which
unblocks that thread, so nothing hangs.
"""

from __future__ import annotations

import functools
import logging
import socket
import time
from collections.abc import Callable
from typing import Any, ClassVar

import attrs
import docker
import docker.errors
import docker.utils
import requests
import trio

from engine.records import ContainerEvent
from engine.sources.connection import FollowsRuntime, own_threads
from engine.sources.containers import Container

logger = logging.getLogger(__name__)

# Actions after which a container's state may have changed; every other one (exec_*, attach,
# health_status...) leaves the record as it is.
_ACTIONS = frozenset({"start", "die", "destroy", "pause", "unpause", "rename", "restart"})


DEFAULT_SOCKET = "/var/run/docker.sock"


def default_client() -> Any:
    """A low-level client configured like the docker CLI (DOCKER_HOST...); contacts the daemon."""
    kwargs = docker.utils.kwargs_from_env()
    _check_unix_socket(kwargs.get("base_url") or f"unix://{DEFAULT_SOCKET}")
    return docker.APIClient(**kwargs)


def client_at(socket_path: str) -> Any:
    """A low-level client of the Docker API served on the unix socket `socket_path`."""
    url = f"unix://{socket_path}"
    _check_unix_socket(url)
    return docker.APIClient(base_url=url)


def client_factory(socket_path: str | None) -> Callable[[], Any]:
    """Clients of the daemon on `socket_path`, or (None) where the docker CLI would look."""
    return default_client if socket_path is None else functools.partial(client_at, socket_path)


def _check_unix_socket(url: str) -> None:
    """Fail before the SDK tries a daemon's unix socket that nobody listens on: the SDK's
    failed connect leaves its socket open until the garbage collector finds it (docker 7.x),
    one fd per reconnect attempt while the daemon is away."""
    path = url.removeprefix("unix://") if url.startswith("unix://") else None
    if path is None:
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        probe.settimeout(2.0)
        probe.connect(path)
    except OSError as exc:
        raise docker.errors.DockerException(f"cannot reach {url}: {exc.strerror}") from None
    finally:
        probe.close()


@attrs.define
class DockerSource(FollowsRuntime[Any, Any, str]):
    """Lists the running containers, then follows the daemon's container events.

    When the daemon is absent at start or goes away, the source keeps trying with capped
    exponential backoff. On (re)connect it opens the event stream first, replaying from the last
    event seen (`since`), and then re-lists, diffing against what it knew: containers that went
    away during the gap are reported removed, new ones added. Containers that both started and
    stopped during the gap are not reported: they left nothing to trace.

    Each event is only a hint: the container is inspected and its record compared with the known
    one, so replayed or duplicated events change nothing. Records are sent from one task, so they
    are in order per container.
    """

    client_factory: Callable[[], Any] = default_client
    min_backoff: float = 0.1
    max_backoff: float = 2.0
    name: str = "docker"
    # What the containers' records say runs them: podman's Docker-compatible API is followed
    # by this same source (engine/sources/podman.py).
    runtime: str = "docker"
    _known: dict[str, Container] = attrs.field(factory=dict, init=False)
    _last_event_nano: int | None = attrs.field(default=None, init=False)
    _threads: trio.CapacityLimiter = attrs.field(factory=own_threads, init=False)
    # What a vanished or unreachable daemon raises through the SDK (requests errors are not
    # wrapped).
    connection_errors: ClassVar[tuple[type[Exception], ...]] = (
        docker.errors.DockerException,
        requests.exceptions.RequestException,
        OSError,
    )

    async def _connect(self) -> Any:
        return await self._blocking(self.client_factory)

    def _problem(self, exc: Exception, *, connected: bool) -> str:
        return f"lost: {exc}" if connected else f"cannot connect: {exc}"

    def _unsubscribe(self, stream: Any) -> None:
        _close_events(stream)

    def _disconnect(self, client: Any) -> None:
        client.close()

    async def _subscribe(self, api: Any) -> Any:
        since = self._last_event_nano
        if since is None:
            # Replay after a gap even when no event came before it. The local clock stands in
            # for the daemon's; re-listing covers any skew.
            self._last_event_nano = time.time_ns()
        return await self._blocking(
            lambda: api.events(
                since=None if since is None else f"{since // 10**9}.{since % 10**9:09d}",
                filters={"type": "container"},
                decode=True,
            )
        )

    async def _list_running(self, api: Any) -> dict[str, Container]:
        return await self._blocking(_list_running, api, self.runtime)

    async def _follow(
        self, api: Any, stream: Any, out: trio.abc.SendChannel[ContainerEvent]
    ) -> None:
        while True:
            event = await self._blocking(_next_event, stream)
            if event is None:
                return
            if isinstance(event.get("timeNano"), int):
                self._last_event_nano = event["timeNano"]
            action = str(event.get("Action") or event.get("status") or "")
            container_id = str(event.get("id") or (event.get("Actor") or {}).get("ID") or "")
            if action not in _ACTIONS or not container_id:
                continue
            logger.debug("%s: %s %s", self.name, action, container_id[:12])
            current = await self._blocking(_inspect_running, api, container_id, self.runtime)
            for record in self._update(container_id, current, action):
                await out.send(record)


def _close_events(stream: Any) -> None:
    """End an event stream and release its connection. The SDK's close() shuts the socket
    down, but when the daemon ended the stream first the response's file object still holds
    the fd (until a garbage collection finds it): close the response as well."""
    try:
        stream.close()
    finally:
        response = getattr(stream, "_response", None)
        if response is not None:
            response.close()


def _next_event(stream: Any) -> dict[str, Any] | None:
    # The SDK's stream turns a vanished daemon (and close()) into StopIteration.
    return next(stream, None)


def _inspect_running(api: Any, container_id: str, runtime: str) -> Container | None:
    try:
        inspected = api.inspect_container(container_id)
    except docker.errors.NotFound:
        return None
    if not (inspected.get("State") or {}).get("Running"):
        return None
    return Container.from_docker(inspected, runtime=runtime)


def _list_running(api: Any, runtime: str) -> dict[str, Container]:
    running = {}
    for summary in api.containers():
        container = _inspect_running(api, summary["Id"], runtime)
        if container is not None:
            running[container.id] = container
    return running
