"""Follow a Docker daemon's containers as an ordered stream of lifecycle records.

Every blocking docker SDK call runs in a worker thread that is abandoned on cancellation; the
event stream is then closed from the trio side, which unblocks that thread, so nothing hangs.
"""

from __future__ import annotations

import functools
import logging
import socket
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import attrs
import docker
import docker.errors
import docker.utils
import requests
import trio

from engine.records import (
    ContainerAdded,
    ContainerEvent,
    ContainerPaused,
    ContainerRemoved,
    ContainerRenamed,
    ContainerUnpaused,
)
from engine.sources.connection import Connection, Outbox
from engine.sources.containers import Container
from engine.sources.reconcile import diff

logger = logging.getLogger(__name__)

# Actions after which a container's state may have changed; every other one (exec_*, attach,
# health_status...) leaves the record as it is.
_ACTIONS = frozenset({"start", "die", "destroy", "pause", "unpause", "rename", "restart"})
# What a vanished or unreachable daemon raises through the SDK (requests errors are not wrapped).
_CONNECTION_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)


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
class DockerSource:
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

    @property
    def known(self) -> Mapping[str, Container]:
        """The containers this source believes are running, by full id."""
        return MappingProxyType(self._known)

    async def run(
        self,
        send_channel: trio.abc.SendChannel[ContainerEvent],
        *,
        task_status: trio.TaskStatus[list[ContainerEvent]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run until cancelled. Started with the first listing as its snapshot (the records
        that take a consumer from nothing to what runs, then ``SourceConnected``), or with
        the first failed connection (``[SourceDisconnected]``: the engine then runs without
        this runtime); the records after that are sent."""
        backoff = self.min_backoff
        connection = Connection(self.name, self.runtime)
        out = Outbox(send_channel, task_status)
        while True:
            try:
                api = await trio.to_thread.run_sync(self.client_factory, abandon_on_cancel=True)
            except _CONNECTION_ERRORS as exc:
                problem = f"cannot connect: {exc}"
            else:
                try:
                    stream = await self._open_events(api)
                    try:
                        records = await self._relist(api)
                        now = connection.connected()
                        await out.put(records if now is None else [*records, now])
                        backoff = self.min_backoff
                        await self._follow(api, stream, send_channel)
                        problem = "event stream ended"
                    finally:
                        _close_events(stream)
                except _CONNECTION_ERRORS as exc:
                    problem = f"lost: {exc}"
                finally:
                    api.close()
            gap = connection.lost(problem)
            if gap is not None:
                await out.put([gap])
            await trio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    async def _open_events(self, api: Any) -> Any:
        since = self._last_event_nano
        if since is None:
            # Replay after a gap even when no event came before it. The local clock stands in
            # for the daemon's; re-listing covers any skew.
            self._last_event_nano = time.time_ns()
        return await trio.to_thread.run_sync(
            lambda: api.events(
                since=None if since is None else f"{since // 10**9}.{since % 10**9:09d}",
                filters={"type": "container"},
                decode=True,
            ),
            abandon_on_cancel=True,
        )

    async def _relist(self, api: Any) -> list[ContainerEvent]:
        running = await trio.to_thread.run_sync(
            _list_running, api, self.runtime, abandon_on_cancel=True
        )
        changes = diff(running, self._known)
        records: list[ContainerEvent] = []
        for gone in changes.to_remove.values():
            records += self._update(gone.id, None, "gone while disconnected")
        for _, current in changes.to_update.values():
            records += self._update(current.id, current, "restarted")
        for new in changes.to_add.values():
            records += self._update(new.id, new, "added")
        return records

    async def _follow(
        self, api: Any, stream: Any, out: trio.abc.SendChannel[ContainerEvent]
    ) -> None:
        while True:
            event = await trio.to_thread.run_sync(_next_event, stream, abandon_on_cancel=True)
            if event is None:
                return
            if isinstance(event.get("timeNano"), int):
                self._last_event_nano = event["timeNano"]
            action = str(event.get("Action") or event.get("status") or "")
            container_id = str(event.get("id") or (event.get("Actor") or {}).get("ID") or "")
            if action not in _ACTIONS or not container_id:
                continue
            logger.debug("%s: %s %s", self.name, action, container_id[:12])
            current = await trio.to_thread.run_sync(
                _inspect_running, api, container_id, self.runtime, abandon_on_cancel=True
            )
            for record in self._update(container_id, current, action):
                await out.send(record)

    def _update(
        self, container_id: str, current: Container | None, reason: str
    ) -> list[ContainerEvent]:
        """The one place where the known set changes; returns the records saying how."""
        previous = self._known.get(container_id)
        if current is None:
            self._known.pop(container_id, None)
        else:
            self._known[container_id] = current
        return transition(previous, current, reason)


def transition(
    previous: Container | None, current: Container | None, reason: str
) -> list[ContainerEvent]:
    """The records that take a consumer from `previous` to `current` (None: not running).

    A container that changed anything but its name or paused state (its pid, namespaces...)
    restarted: it is removed and added again, so that per-container work is redone.
    """
    if previous is None:
        return [] if current is None else [ContainerAdded(current)]
    if current is None:
        return [ContainerRemoved(previous, reason)]
    if attrs.evolve(previous, name=current.name, paused=current.paused) != current:
        return [ContainerRemoved(previous, "restarted"), ContainerAdded(current)]
    records: list[ContainerEvent] = []
    if previous.name != current.name:
        records.append(ContainerRenamed(current, previous.name))
    if previous.paused != current.paused:
        records.append(ContainerPaused(current) if current.paused else ContainerUnpaused(current))
    return records


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
