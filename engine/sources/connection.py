"""What every runtime source does alike: say how its connection to the runtime goes (records
and log lines), and hand its records on (the snapshot first)."""

from __future__ import annotations

import logging
import time

import attrs
import trio

from engine.records import ContainerEvent, SourceConnected, SourceDisconnected, SourceReconnected

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
