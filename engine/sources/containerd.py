"""Follow a containerd daemon's containers (every namespace) as an ordered stream of lifecycle
records: the same records, and the same discipline, as the Docker source.

Every blocking gRPC call runs in a worker thread that is abandoned on cancellation; the event
stream is then cancelled from the trio side, which ends the call that thread is blocked in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import ClassVar

import attrs
import grpc
import trio

from engine.records import ContainerEvent
from engine.sources.connection import FollowsRuntime, own_threads
from engine.sources.containerd_api import (
    DEFAULT_SOCKET,
    ContainerdClient,
    ContainerRecord,
    Envelope,
    EventStream,
    describe,
)
from engine.sources.containerd_model import by_sandbox_first, container_from_containerd, sandbox_id
from engine.sources.containers import Container

logger = logging.getLogger(__name__)

# Docker's own containers, when Docker runs on this containerd (its source reports them).
DOCKER_NAMESPACE = "moby"
# containerd's namespace and the container's id: ids are unique only within a namespace.
Key = tuple[str, str]


@attrs.define
class ContainerdSource(FollowsRuntime[ContainerdClient, EventStream, Key]):
    """Lists the running containers of every namespace, then follows containerd's events.

    When the daemon is absent at start or goes away, the source keeps trying with capped
    exponential backoff. On (re)connect it subscribes to the events first and then re-lists,
    diffing against what it knew: containers that went away during the gap are reported
    removed, new ones added (containerd keeps no event history to replay; its tasks outlive
    a restart of the daemon, so those that ran through the gap change nothing). Containers
    that both started and stopped during the gap are not reported: they left nothing to trace.

    Each event is only a hint: the container and its task are looked up and the record
    compared with the known one, so duplicated events change nothing. Records are sent from
    one task, so they are in order per container.
    """

    socket: str = DEFAULT_SOCKET
    skip_namespaces: frozenset[str] = frozenset()
    client_factory: Callable[[str], ContainerdClient] = ContainerdClient
    min_backoff: float = 0.1
    max_backoff: float = 2.0
    name: str = "containerd"
    proc: Path = Path("/proc")
    runtime: str = "containerd"
    _known: dict[Key, Container] = attrs.field(factory=dict, init=False)
    _threads: trio.CapacityLimiter = attrs.field(factory=own_threads, init=False)
    connection_errors: ClassVar[tuple[type[Exception], ...]] = (grpc.RpcError, OSError)

    async def _connect(self) -> ContainerdClient:
        return self.client_factory(self.socket)

    async def _subscribe(self, client: ContainerdClient) -> EventStream:
        return await self._blocking(client.subscribe)

    def _unsubscribe(self, stream: EventStream) -> None:
        stream.close()

    def _disconnect(self, client: ContainerdClient) -> None:
        client.close()

    def _problem(self, exc: Exception, *, connected: bool) -> str:
        return describe(exc) if isinstance(exc, grpc.RpcError) else str(exc)

    async def _list_running(self, client: ContainerdClient) -> dict[Key, Container]:
        return await self._blocking(_list_running, client, self.skip_namespaces, self.proc)

    async def _follow(
        self,
        client: ContainerdClient,
        stream: EventStream,
        out: trio.abc.SendChannel[ContainerEvent],
    ) -> None:
        while True:
            event = await self._blocking(stream.next)
            if event is None:
                return
            if event.namespace in self.skip_namespaces or not event.concerns_init:
                continue
            logger.debug(
                "%s: %s %s/%s", self.name, event.topic, event.namespace, event.container_id
            )
            key = (event.namespace, event.container_id)
            current = await self._blocking(_inspect_running, client, event, self.proc)
            for record in self._update(key, current, event.topic.rsplit("/", 1)[-1]):
                await out.send(record)


def _inspect_running(client: ContainerdClient, event: Envelope, proc: Path) -> Container | None:
    """The container an event is about, if it runs (blocking)."""
    record = client.container(event.namespace, event.container_id)
    if record is None:
        return None
    task = client.task(event.namespace, record.id)
    if task is None or not task.running:
        return None
    owner = sandbox_id(record)
    sandbox = None if owner is None else client.container(event.namespace, owner)
    return container_from_containerd(record, task, sandbox=sandbox, proc=proc)


def _list_running(
    client: ContainerdClient, skip: Iterable[str], proc: Path
) -> dict[Key, Container]:
    """Every running container of every namespace but `skip`, sandboxes first (blocking)."""
    skipped = frozenset(skip)
    running: dict[Key, Container] = {}
    for namespace in client.namespaces():
        if namespace in skipped:
            continue
        records = {r.id: r for r in client.containers(namespace)}
        tasks = client.tasks(namespace)
        for record in by_sandbox_first(records):
            task = tasks.get(record.id)
            if task is None or not task.running:
                continue
            owner = sandbox_id(record)
            sandbox: ContainerRecord | None = None if owner is None else records.get(owner)
            running[(namespace, record.id)] = container_from_containerd(
                record, task, sandbox=sandbox, proc=proc
            )
    return running
