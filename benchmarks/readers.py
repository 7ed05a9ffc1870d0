"""The readers the throughput benchmark compares, each run against the same hammer and gadget.

In this process: (1) bcc's own loop with a callback that reads every field into Python values,
as a real script does (the baseline of ``events()`` and ``batches()``); the engine's
``events()``, whose consumer reads every field too; the engine's ``batches()``, whose consumer
reduces the numeric columns (vectorised: pid and tid summed, ts's max; comm is not read) and
counts the rows named with a container. As subprocesses writing to a pipe this process
reads: (2) a bcc script printing each record as a JSON line (benchmarks/bcc_json.py, the
baseline of ``engine run``), and ``engine run --output json``. Every run reports the rate the
hammer achieved (``Done``), not the one it was asked for.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from benchmarks.bcc_side import (
    GADGETS,
    bcc_gadget,
    fired,
    gadget_path,
    open_buffer,
    records_per_call,
    set_target,
)
from benchmarks.hammer import Done, Load
from engine.engine import Engine, open_engine
from engine.events.pump import PERF_WAKEUP_EVENTS
from engine.records import Event

SETTLE = 0.3  # seconds without a new record after the hammer ends: the run is drained
ROOT = Path(__file__).resolve().parent.parent


@attrs.frozen
class Run:
    load: Load
    done: Done
    fired: int  # records the gadget was to write; for a subprocess reader, from the hammer's calls
    delivered: int
    per_call: int  # records the gadget writes per hammer call

    @property
    def lost(self) -> int:
        return self.fired - self.delivered

    @property
    def rate(self) -> float:
        return self.delivered / self.done.seconds

    @property
    def achieved(self) -> float:
        """Records per second the load generator made (the hammer's calls, times the records
        the gadget writes per call)."""
        return self.done.calls * self.per_call / self.done.seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "target_rate": self.load.rate * self.per_call,
            "achieved_rate": self.achieved,
            "calls": self.done.calls,
            "records_per_call": self.per_call,
            "fired": self.fired,
            "seconds": self.done.seconds,
            "delivered": self.delivered,
            "lost": self.lost,
            "delivered_per_s": self.rate,
        }


Runner = Callable[[str, Path, Sequence[Load]], list[Run]]


# --- (1) bcc's loop, reading every field ------------------------------------------------


def bcc_loop_runs(
    kind: str, hammer: Path, loads: Sequence[Load], wakeup_events: int = 1
) -> list[Run]:
    """Each load in turn under bcc's Python loop, with one compiled gadget; a perf buffer
    wakes it every ``wakeup_events`` records (bcc's default: every record)."""
    runs: list[Run] = []
    with bcc_gadget(kind) as bpf:
        seen = [0]
        table = bpf["events"]

        def on_event(_ctx: Any, data: Any, _size: int) -> None:
            e = table.event(data)
            _values = (e.pid, e.tid, e.ts, e.comm.decode())
            seen[0] += 1

        poll = open_buffer(bpf, kind, on_event, wakeup_events)
        for load in loads:
            before = seen[0]
            proc = subprocess.Popen(
                load.argv(hammer), stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
            assert proc.stdin is not None and proc.stdout is not None
            set_target(bpf, proc.pid)
            proc.stdin.write(b"g")
            proc.stdin.close()
            while proc.poll() is None:
                poll(100)
            done = Done.parse(proc.stdout.read())
            quiet_since, last = time.monotonic(), seen[0]
            while time.monotonic() - quiet_since < SETTLE:
                poll(50)
                if seen[0] != last:
                    quiet_since, last = time.monotonic(), seen[0]
            if kind == "perf":
                bpf.perf_buffer_consume()  # what is left below the wake-up count
            runs.append(Run(load, done, fired(bpf), seen[0] - before, records_per_call(kind)))
    return runs


def bcc_loop_engine_wakeups_runs(kind: str, hammer: Path, loads: Sequence[Load]) -> list[Run]:
    """bcc's loop with the engine's perf wake-up setting (every ``PERF_WAKEUP_EVENTS``
    records): the same kernel-side cost for both, so that the ratio is the readers' alone."""
    return bcc_loop_runs(kind, hammer, loads, PERF_WAKEUP_EVENTS)


# --- the engine in this process ---------------------------------------------------------


async def _read_events(
    engine: Engine, seen: list[int], *, task_status: trio.TaskStatus[None]
) -> None:
    task_status.started()
    async for record in engine.events():
        if isinstance(record, Event):
            d = record.data
            _values = (d["pid"], d["tid"], d["ts"], d["comm"])
            seen[0] += 1


async def _read_batches(
    engine: Engine, seen: list[int], *, task_status: trio.TaskStatus[None]
) -> None:
    async with engine.batches("events") as batches:
        task_status.started()  # registered: the records read from now on are its
        async for batch in batches:
            fields = batch.fields
            _sums = (fields["pid"].sum(), fields["tid"].sum(), fields["ts"].max())
            _named = (batch.container >= 0).sum()
            seen[0] += len(batch)


async def _hammer(hammer: Path, load: Load, on_start: Callable[[int], Awaitable[None]]) -> Done:
    """Run the hammer once: ``on_start(pid)`` before it is told to go."""
    proc = await trio.lowlevel.open_process(
        load.argv(hammer), stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    await on_start(proc.pid)
    await proc.stdin.send_all(b"g")
    await proc.stdin.aclose()
    output = b""
    while chunk := await proc.stdout.receive_some():
        output += chunk
    await proc.wait()
    return Done.parse(output)


async def _settled(seen: list[int]) -> None:
    last = seen[0]
    while True:
        await trio.sleep(SETTLE)
        if seen[0] == last:
            return
        last = seen[0]


async def _engine_runs(
    kind: str, hammer: Path, loads: Sequence[Load], consume: Callable[..., Any]
) -> list[Run]:
    runs: list[Run] = []
    seen = [0]
    async with open_engine(gadget_path(kind), containers=False) as engine, trio.open_nursery() as n:
        await n.start(consume, engine, seen)
        bpf = engine.gadgets[0].bpf

        async def target(pid: int) -> None:
            set_target(bpf, pid)

        for load in loads:
            before = seen[0]
            done = await _hammer(hammer, load, target)
            await _settled(seen)
            runs.append(Run(load, done, fired(bpf), seen[0] - before, records_per_call(kind)))
        n.cancel_scope.cancel()
    return runs


def events_runs(kind: str, hammer: Path, loads: Sequence[Load]) -> list[Run]:
    """Each load in turn through ``events()``, with one running engine."""
    return trio.run(_engine_runs, kind, hammer, loads, _read_events)


def batches_runs(kind: str, hammer: Path, loads: Sequence[Load]) -> list[Run]:
    """Each load in turn through ``batches()``, with one running engine."""
    return trio.run(_engine_runs, kind, hammer, loads, _read_batches)


# --- readers in a subprocess, writing to a pipe -----------------------------------------


@attrs.frozen
class PipeReader:
    """A subprocess that prints records: its command for a hammer's pid, the stderr line it
    prints once it reads the target's records, and what its stdout holds once per record."""

    argv: Callable[[str, int], list[str]]
    ready: bytes
    token: bytes
    env: Callable[[int], dict[str, str]] = lambda _pid: {}


async def _count(stream: trio.abc.ReceiveStream, token: bytes, seen: list[int]) -> None:
    tail = b""
    async for chunk in stream:
        data = tail + chunk
        seen[0] += data.count(token)
        # A token cut by the chunk's end is counted with the next chunk.
        tail = data[max(0, len(data) - len(token) + 1) :]


async def _wait_line(stream: trio.abc.ReceiveStream, line: bytes) -> None:
    buffer = b""
    async for chunk in stream:
        buffer += chunk
        if line in buffer:
            return
    raise RuntimeError(f"the reader ended before saying {line!r}: {buffer[-2000:]!r}")


async def _pipe_run(reader: PipeReader, kind: str, hammer: Path, load: Load) -> Run:
    seen = [0]

    async def start(pid: int) -> None:
        proc = await trio.lowlevel.open_process(
            reader.argv(kind, pid),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env=_environment(reader.env(pid)),
        )
        processes.append(proc)
        assert proc.stdout is not None and proc.stderr is not None
        with trio.fail_after(120):
            await _wait_line(proc.stderr, reader.ready)
        nursery.start_soon(_count, proc.stdout, reader.token, seen)
        nursery.start_soon(_drain, proc.stderr)

    processes: list[trio.Process] = []
    async with trio.open_nursery() as nursery:
        done = await _hammer(hammer, load, start)
        await _settled(seen)
        for proc in processes:
            proc.send_signal(signal.SIGINT)
            await proc.wait()
    per_call = records_per_call(kind)
    return Run(load, done, done.calls * per_call, seen[0], per_call)


def _environment(extra: dict[str, str]) -> dict[str, str]:
    # Python's own buffering of a pipe, as where bcc scripts usually run (not this machine's
    # PYTHONUNBUFFERED, which would give the baseline a write per line).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return {**env, **extra}


async def _drain(stream: trio.abc.ReceiveStream) -> None:
    async for _ in stream:
        pass


def _pipe_runs(reader: PipeReader) -> Runner:
    def runs(kind: str, hammer: Path, loads: Sequence[Load]) -> list[Run]:
        return [trio.run(_pipe_run, reader, kind, hammer, load) for load in loads]

    return runs


BCC_JSON = PipeReader(
    argv=lambda kind, pid: [sys.executable, "-m", "benchmarks.bcc_json", kind, str(pid)],
    ready=b"ready\n",
    token=b"\n",
)
ENGINE_JSON = PipeReader(
    argv=lambda kind, _pid: [
        sys.executable,
        "-m",
        "engine",
        "run",
        str(gadget_path(kind)),
        "--hook",
        str(GADGETS / "target_hook.py"),
        "--output",
        "json",
    ],
    ready=b"engine-bench: target set",
    token=b'{"type": "event"',
    env=lambda pid: {"ENGINE_BENCH_TARGET": str(pid)},
)
bcc_json_runs = _pipe_runs(BCC_JSON)
engine_json_runs = _pipe_runs(ENGINE_JSON)
