"""A blocking client for the part of containerd's gRPC API that the containerd source uses.

grpcio's synchronous channel: every call blocks, so call from a worker thread (the trio source
does). The event stream is the one long call; `EventStream.close()` from any thread cancels it,
which ends a `next()` blocked in another. Calls fail fast (`grpc.RpcError`, UNAVAILABLE) when
the daemon is not there; each connection is a new channel, so that a daemon that comes back is
reached at once rather than after the channel's own reconnect backoff.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import attrs
import grpc

from engine.sources.proto.containerd import (
    containers_pb2,
    containers_pb2_grpc,
    event_types_pb2,
    events_pb2,
    events_pb2_grpc,
    namespaces_pb2,
    namespaces_pb2_grpc,
    tasks_pb2,
    tasks_pb2_grpc,
    types_pb2,
)

logger = logging.getLogger(__name__)

DEFAULT_SOCKET = "/run/containerd/containerd.sock"
# Every call but Subscribe names the namespace it is about in this metadata key.
NAMESPACE_KEY = "containerd-namespace"
CALL_TIMEOUT = 10.0
# The topics after which a container's state may have changed. /containers/create is not one:
# a container is created without a task, and runs only once its task starts.
TOPICS = (
    "/tasks/start",
    "/tasks/exit",
    "/tasks/delete",
    "/tasks/paused",
    "/tasks/resumed",
    "/containers/update",
    "/containers/delete",
)
_CHANNEL_OPTIONS = (("grpc.max_reconnect_backoff_ms", 1000),)


@attrs.frozen
class ContainerRecord:
    """What containerd keeps about one container, as much as the source needs.

    `network` is the spec's network namespace entry: None when the container has none (it
    runs in the host's netns), "" when it gets a new one, else the path of the netns it joins.
    """

    namespace: str
    id: str
    image: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    network: str | None

    @classmethod
    def from_proto(cls, namespace: str, message: containers_pb2.Container) -> ContainerRecord:
        spec = _spec(message)
        linux = spec.get("linux") or {}
        entries = [n for n in linux.get("namespaces") or () if n.get("type") == "network"]
        return cls(
            namespace=namespace,
            id=message.id,
            image=message.image,
            labels=dict(message.labels),
            annotations={str(k): str(v) for k, v in (spec.get("annotations") or {}).items()},
            network=str(entries[0].get("path") or "") if entries else None,
        )


@attrs.frozen
class TaskRecord:
    """A container's task (its init process): `status` is containerd's, e.g. "RUNNING"."""

    pid: int
    status: str

    @property
    def running(self) -> bool:
        """Started and not stopped (a paused task is still there to trace)."""
        return self.pid > 0 and self.status in ("RUNNING", "PAUSED", "PAUSING")

    @property
    def paused(self) -> bool:
        return self.status in ("PAUSED", "PAUSING")

    @classmethod
    def from_proto(cls, process: types_pb2.Process) -> TaskRecord:
        return cls(pid=process.pid, status=types_pb2.Status.Name(process.status))


@attrs.frozen
class Envelope:
    """One event: its namespace and topic, and the container it is about."""

    namespace: str
    topic: str
    container_id: str
    # For /tasks/exit: the process that exited (the container's own id for its init process).
    exec_id: str = ""

    @classmethod
    def from_proto(cls, message: events_pb2.Envelope) -> Envelope:
        payload = message.event.value
        exec_id = ""
        if message.topic.startswith("/containers/"):
            container = event_types_pb2.ContainerEvent.FromString(payload).id
        elif message.topic == "/tasks/exit":
            exited = event_types_pb2.TaskExit.FromString(payload)
            container, exec_id = exited.container_id, exited.id
        else:
            container = event_types_pb2.TaskEvent.FromString(payload).container_id
        return cls(message.namespace, message.topic, container, exec_id)

    @property
    def concerns_init(self) -> bool:
        """False for the exit of a process run in the container (an exec), which changes
        nothing about the container."""
        return self.topic != "/tasks/exit" or self.exec_id in ("", self.container_id)


class EventStream:
    """containerd's events (every namespace), from the moment of subscribing."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._closed = False

    def next(self) -> Envelope | None:
        """The next event; None once closed. Raises `grpc.RpcError` when the daemon goes."""
        while True:
            try:
                message = next(self._call)
            except StopIteration:
                return None
            except grpc.RpcError:
                if self._closed:
                    return None
                raise
            if message.topic in TOPICS:
                return Envelope.from_proto(message)

    def close(self) -> None:
        """Idempotent; safe from any thread."""
        self._closed = True
        self._call.cancel()


class ContainerdClient:
    """One connection to a containerd socket."""

    def __init__(self, socket: str = DEFAULT_SOCKET) -> None:
        self.socket = socket
        self._channel = grpc.insecure_channel(f"unix://{socket}", options=_CHANNEL_OPTIONS)
        self._namespaces = namespaces_pb2_grpc.NamespacesStub(self._channel)
        self._containers = containers_pb2_grpc.ContainersStub(self._channel)
        self._tasks = tasks_pb2_grpc.TasksStub(self._channel)
        self._events = events_pb2_grpc.EventsStub(self._channel)

    def subscribe(self) -> EventStream:
        topics = "|".join(TOPICS)
        request = events_pb2.SubscribeRequest(filters=[f'topic~="^({topics})$"'])
        return EventStream(self._events.Subscribe(request))

    def namespaces(self) -> list[str]:
        reply = self._namespaces.List(namespaces_pb2.ListNamespacesRequest(), timeout=CALL_TIMEOUT)
        return [n.name for n in reply.namespaces]

    def containers(self, namespace: str) -> list[ContainerRecord]:
        reply = self._containers.List(
            containers_pb2.ListContainersRequest(),
            timeout=CALL_TIMEOUT,
            metadata=_in(namespace),
        )
        return [ContainerRecord.from_proto(namespace, c) for c in reply.containers]

    def container(self, namespace: str, container_id: str) -> ContainerRecord | None:
        """None when there is no such container."""
        try:
            reply = self._containers.Get(
                containers_pb2.GetContainerRequest(id=container_id),
                timeout=CALL_TIMEOUT,
                metadata=_in(namespace),
            )
        except grpc.RpcError as exc:
            if _not_found(exc):
                return None
            raise
        return ContainerRecord.from_proto(namespace, reply.container)

    def tasks(self, namespace: str) -> dict[str, TaskRecord]:
        """The namespace's tasks, by container id."""
        reply = self._tasks.List(
            tasks_pb2.ListTasksRequest(), timeout=CALL_TIMEOUT, metadata=_in(namespace)
        )
        # containerd 1.6 leaves container_id empty here and names the task by its init
        # process's id, which is the container's.
        return {t.container_id or t.id: TaskRecord.from_proto(t) for t in reply.tasks}

    def task(self, namespace: str, container_id: str) -> TaskRecord | None:
        """None when the container has no task."""
        try:
            reply = self._tasks.Get(
                tasks_pb2.GetRequest(container_id=container_id),
                timeout=CALL_TIMEOUT,
                metadata=_in(namespace),
            )
        except grpc.RpcError as exc:
            if _not_found(exc):
                return None
            raise
        return TaskRecord.from_proto(reply.process)

    def close(self) -> None:
        self._channel.close()


def describe(exc: grpc.RpcError) -> str:
    """An RpcError in one line: its code and containerd's words."""
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    return f"{code.name if code else 'error'}: {details}"


def _in(namespace: str) -> tuple[tuple[str, str]]:
    return ((NAMESPACE_KEY, namespace),)


def _not_found(exc: grpc.RpcError) -> bool:
    return isinstance(exc, grpc.Call) and exc.code() is grpc.StatusCode.NOT_FOUND


def _spec(message: containers_pb2.Container) -> dict[str, Any]:
    """The OCI runtime spec that containerd keeps as JSON; {} when it has none we can read."""
    if not message.spec.value:
        return {}
    try:
        spec = json.loads(message.spec.value)
    except ValueError as exc:
        logger.debug("container %s: unreadable spec: %s", message.id, exc)
        return {}
    return spec if isinstance(spec, dict) else {}
