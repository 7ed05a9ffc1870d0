"""What every runtime source does alike: follow its runtime through reconnects, say how the
connection goes (records and log lines), and hand its records on (the snapshot first)."""

from __future__ import annotations

import abc
import logging
import time
import traceback
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import ClassVar, Generic, TypeVar, TypeVarTuple

import attrs
import trio

from engine.records import (
    ContainerAdded,
    ContainerEvent,
    ContainerPaused,
    ContainerRemoved,
    ContainerRenamed,
    ContainerUnpaused,
    SourceConnected,
    SourceDisconnected,
    SourceReconnected,
)
from engine.sources.containers import Container
from engine.sources.reconcile import diff

Client = TypeVar("Client")
Stream = TypeVar("Stream")
Key = TypeVar("Key")
T = TypeVar("T")
Args = TypeVarTuple("Args")

# A source's blocking calls come one at a time (connect, subscribe, list, each event read and
# inspection); the second thread lets it reconnect while a call abandoned with the old
# connection has not returned yet.
SOURCE_THREADS = 2


def own_threads() -> trio.CapacityLimiter:
    """The worker threads of one source, apart from trio's shared limiter: an application
    (or a benchmark) that keeps that one full made each of the runtime's events wait behind
    its work, seconds under container churn, past the identify timeout of the netns."""
    return trio.CapacityLimiter(SOURCE_THREADS)


logger = logging.getLogger(__name__)


@attrs.define
class Connection:
    """The state of one source's connection: `source_connected` at the first connection,
    `source_disconnected` when it is lost (or the runtime is absent at start), and
    `source_reconnected` when it is back. A runtime that is absent at start is not an error:
    logged at INFO, since a node need not run every runtime; a lost one is a WARNING."""

    source: str
    runtime: str
    _gap: SourceDisconnected | None = attrs.field(default=None, init=False)
    _ever_connected: bool = attrs.field(default=False, init=False)

    def connected(self) -> SourceConnected | SourceReconnected | None:
        """The source follows its runtime now; the record saying so (None: it already did)."""
        gap, self._gap = self._gap, None
        if gap is not None:
            logger.info("%s: connected to %s after a gap", self.source, self.runtime)
            self._ever_connected = True
            return SourceReconnected(self.source, gap.at, time.time(), self.runtime)
        if self._ever_connected:
            return None
        self._ever_connected = True
        logger.info("%s: connected to %s", self.source, self.runtime)
        return SourceConnected(self.source, time.time(), self.runtime)

    def lost(self, problem: str) -> SourceDisconnected | None:
        """The source cannot follow its runtime; the record saying so (None: already said)."""
        if self._gap is not None:
            return None
        if self._ever_connected:
            logger.warning("%s: lost %s (%s); retrying", self.source, self.runtime, problem)
        else:
            logger.info("%s: no %s here yet (%s); retrying", self.source, self.runtime, problem)
        self._gap = SourceDisconnected(self.source, time.time(), problem, self.runtime)
        return self._gap


@attrs.define
class Outbox:
    """Where a source's records go: the first batch is its snapshot, handed back through
    ``task_status.started`` (nobody reads the channel before ``start()`` returns); every
    later one is sent, in order."""

    send_channel: trio.abc.SendChannel[ContainerEvent]
    task_status: trio.TaskStatus[list[ContainerEvent]]
    _started: bool = attrs.field(default=False, init=False)

    async def put(self, records: list[ContainerEvent]) -> None:
        if not self._started:
            self._started = True
            self.task_status.started(records)
            return
        for record in records:
            await self.send_channel.send(record)


class FollowsRuntime(abc.ABC, Generic[Client, Stream, Key]):
    """The loop of a runtime source: connect, subscribe to the runtime's events, re-list
    (diffing against what it knew), follow the events; when the runtime is absent or goes
    away, try again with capped exponential backoff. Subscribing comes before listing, so
    that nothing between the two is missed. A subclass says how each step is done."""

    name: str
    runtime: str
    min_backoff: float
    max_backoff: float
    _known: dict[Key, Container]
    _threads: trio.CapacityLimiter  # own_threads()
    # What an absent or vanished runtime raises through the client.
    connection_errors: ClassVar[tuple[type[Exception], ...]]

    @property
    def known(self) -> Mapping[Key, Container]:
        """The containers this source believes are running, by the source's key."""
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
                client = await self._connect()
            except self.connection_errors as exc:
                problem = self._problem(exc, connected=False)
            else:
                try:
                    stream = await self._subscribe(client)
                    try:
                        records = await self._relist(client)
                        now = connection.connected()
                        await out.put(records if now is None else [*records, now])
                        backoff = self.min_backoff
                        await self._follow(client, stream, send_channel)
                        problem = "event stream ended"
                    finally:
                        self._unsubscribe(stream)
                except self.connection_errors as exc:
                    problem = self._problem(exc, connected=True)
                finally:
                    self._disconnect(client)
            gap = connection.lost(problem)
            if gap is not None:
                await out.put([gap])
            await trio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    async def _blocking(self, call: Callable[[*Args], T], *args: *Args) -> T:
        """``call(*args)`` in one of the source's own worker threads, abandoned on
        cancellation (the stream is closed from the trio side, which ends it). A connection
        error leaves the thread with its frames' locals dropped (`release_frames`)."""
        errors = self.connection_errors

        def in_thread() -> T:
            try:
                return call(*args)
            except errors as exc:
                release_frames(exc)
                raise

        return await trio.to_thread.run_sync(
            in_thread, abandon_on_cancel=True, limiter=self._threads
        )

    @abc.abstractmethod
    async def _connect(self) -> Client: ...

    @abc.abstractmethod
    async def _subscribe(self, client: Client) -> Stream: ...

    @abc.abstractmethod
    def _unsubscribe(self, stream: Stream) -> None: ...

    @abc.abstractmethod
    def _disconnect(self, client: Client) -> None: ...

    async def _relist(self, client: Client) -> list[ContainerEvent]:
        """What changed while the source was not following: against what it knew."""
        changes = diff(await self._list_running(client), self._known)
        records: list[ContainerEvent] = []
        for key in changes.to_remove:
            records += self._update(key, None, "gone while disconnected")
        for key, (_, current) in changes.to_update.items():
            records += self._update(key, current, "restarted")
        for key, new in changes.to_add.items():
            records += self._update(key, new, "added")
        return records

    def _update(self, key: Key, current: Container | None, reason: str) -> list[ContainerEvent]:
        """The one place where the known set changes; returns the records saying how."""
        previous = self._known.get(key)
        if current is None:
            self._known.pop(key, None)
        else:
            self._known[key] = current
        return transition(previous, current, reason)

    @abc.abstractmethod
    async def _list_running(self, client: Client) -> dict[Key, Container]:
        """Every running container, by the source's key (in a worker thread)."""

    @abc.abstractmethod
    async def _follow(
        self, client: Client, stream: Stream, out: trio.abc.SendChannel[ContainerEvent]
    ) -> None: ...

    @abc.abstractmethod
    def _problem(self, exc: Exception, *, connected: bool) -> str: ...


def release_frames(exc: BaseException) -> None:
    """Drop the locals of every finished frame in `exc`'s tracebacks, its causes' and
    contexts' too. A client library's failed connect leaves its new socket in a local of the
    frame that raised (the docker SDK's unix connection does): the exception, its traceback
    and that frame hold one another, so the fd stayed open until a garbage collection came,
    once per failed call while a runtime restarts (an abandoned call's exception included)."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if current.__traceback__ is not None:
            traceback.clear_frames(current.__traceback__)
        pending += [current.__cause__, current.__context__]
        # Wrapping libraries keep the error they wrap in their args or as `reason` (urllib3).
        wrapped = [*current.args, getattr(current, "reason", None)]
        pending += [arg for arg in wrapped if isinstance(arg, BaseException)]


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
