"""`python -m engine run ...` as a subprocess: its JSON records and stderr lines as they come,
with ``until(predicate)`` to wait on them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from tests.support.constants import ROOT
from tests.support.waiting import Changes

Record = dict[str, Any]
ENGINE = [sys.executable, "-m", "engine", "run"]


@attrs.define
class EngineProcess(Changes):
    """A running engine. With ``keep_events=False`` gadget events are only counted: a flood
    of them must not make the test the bottleneck."""

    process: trio.Process = attrs.field(kw_only=True)
    keep_events: bool = attrs.field(default=True, kw_only=True)
    records: list[Record] = attrs.Factory(list)
    stderr: list[str] = attrs.Factory(list)
    events_seen: int = 0
    # How many of stdout and stderr are still being read.
    streams: int = attrs.field(default=2, kw_only=True)
    _read_all: trio.Event = attrs.Factory(trio.Event)

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    async def read(self, stream: trio.abc.ReceiveStream, take: Callable[[bytes], None]) -> None:
        """Hand every line of ``stream`` to ``take``; the last reader to end says so."""
        buffer = b""
        async for chunk in stream:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                take(line)
            self.changed()
        if buffer:
            take(buffer)
        self.streams -= 1
        if self.streams == 0:
            self._read_all.set()
            self.ended()

    def take_record(self, line: bytes) -> None:
        if line.startswith(b'{"type": "event"'):
            self.events_seen += 1
            if not self.keep_events:
                return
        self.records.append(json.loads(line))

    def take_stderr(self, line: bytes) -> None:
        self.stderr.append(line.decode(errors="replace"))

    def describe(self) -> str:
        last = [r for r in self.records if r["type"] != "event"][-5:]
        return f"engine {self.pid}: last records {last}; stderr {self.stderr[-10:]}"

    def of_type(self, kind: str) -> list[Record]:
        return [r for r in self.records if r.get("type") == kind]

    def events(self, source: str | None = None) -> list[Record]:
        return [r for r in self.of_type("event") if source is None or r["source"] == source]

    def lines(self, pattern: str) -> list[str]:
        return [line for line in self.stderr if re.search(pattern, line)]

    async def line(self, pattern: str, timeout: float = 30) -> str:  # noqa: ASYNC109 - as until()
        """The first stderr line matching ``pattern`` (waits for it)."""
        found = await self.until(lambda: self.lines(pattern), timeout, f"a line {pattern!r}")
        return found[0]

    async def finished(self) -> int:
        """The exit code, once everything the process wrote has been read."""
        code = await self.process.wait()
        await self._read_all.wait()
        return int(code)

    async def close(self) -> None:
        """Killed (SIGKILL) if still running, waited for, its pipes closed once read."""
        if self.process.returncode is None:
            self.process.kill()
        with trio.CancelScope(shield=True):
            await self.process.wait()
            with trio.move_on_after(5):  # its output ends with it
                await self._read_all.wait()
            for stream in (self.process.stdout, self.process.stderr):
                if stream is not None:
                    await stream.aclose()

    async def stop(self, signum: int = signal.SIGINT) -> int:
        """Signal it (Ctrl-C by default, as a person stops it); its exit code."""
        self.process.send_signal(signum)
        return await self.finished()


async def spawn(
    nursery: trio.Nursery,
    *args: str,
    stdout: Any = subprocess.PIPE,
    env: dict[str, str] | None = None,
    keep_events: bool = True,
    command: Sequence[str] = ENGINE,
) -> EngineProcess:
    """Start ``engine run *args`` (or ``command *args``), its output read in ``nursery`` (JSON
    lines on stdout when it is a pipe, read into ``records``)."""
    json_out = ["--output", "json"] if stdout is subprocess.PIPE and command is ENGINE else []
    process = await trio.lowlevel.open_process(
        [*command, *args, *json_out],
        stdout=stdout,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=None if env is None else {**os.environ, **env},
    )
    running = EngineProcess(
        process=process, keep_events=keep_events, streams=1 if process.stdout is None else 2
    )
    assert process.stderr is not None
    nursery.start_soon(running.read, process.stderr, running.take_stderr)
    if process.stdout is not None:
        nursery.start_soon(running.read, process.stdout, running.take_record)
    return running


@asynccontextmanager
async def engine_process(
    *args: str,
    stdout: Any = subprocess.PIPE,
    env: dict[str, str] | None = None,
    keep_events: bool = True,
    command: Sequence[str] = ENGINE,
) -> AsyncIterator[EngineProcess]:
    """``spawn``, killed (SIGKILL) if still running when the block ends."""
    async with trio.open_nursery() as nursery:
        running = await spawn(
            nursery, *args, stdout=stdout, env=env, keep_events=keep_events, command=command
        )
        try:
            yield running
        finally:
            await running.close()
