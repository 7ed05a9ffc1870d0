"""Several gadgets in one engine, and several engines side by side, on real containers.

Traffic: ICMP echo from a test container to the docker bridge, nothing else. The gadgets under
tests/integration/gadgets/ report every echo request and reply with the ping's id and sequence
number, so a missed packet (a gap) or a packet seen twice shows up as exactly that.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from engine import open_engine
from engine.attach import (
    Direction,
    HostPeer,
    TcFilter,
    attach_classifier,
    find_host_peers,
    owner_alive,
    remove_orphan_filters,
)
from engine.bcc.loader import load_gadget
from engine.gadget.model import Gadget
from engine.netns import NetnsHandle

pytestmark = [pytest.mark.integration, pytest.mark.docker]

ROOT = Path(__file__).resolve().parents[2]
GADGETS = Path(__file__).resolve().parent / "gadgets"
ICMP_ECHO = GADGETS / "icmp_echo.c"  # requests and replies, both directions, ring buffer
ECHO_REPLIES = GADGETS / "echo_replies.c"  # replies into the container, perf buffer
BROKEN = GADGETS / "broken.c"  # does not compile
IMAGE = os.environ.get("ENGINE_TEST_IMAGE", "engine-test:latest")
BRIDGE = "172.17.0.1"  # the docker bridge: test traffic goes nowhere else
REQUEST, REPLY = 8, 0
INTO, OUT_OF = 0, 1


async def sh(*argv: str, check: bool = True) -> str:
    done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=check)
    return str(done.stdout.decode().strip())


async def ping(container: str, count: int, interval: float = 0.2) -> None:
    await sh("docker", "exec", container, "ping", "-c", str(count), "-i", str(interval), BRIDGE)


@pytest.fixture
def container(docker_daemon: None) -> Iterator[str]:
    name = f"engine-test-{uuid.uuid4().hex[:8]}-several"
    subprocess.run(["docker", "run", "-d", "--name", name, IMAGE, "sleep", "300"], check=True)
    yield name
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


_FILTER = re.compile(r"pref (\d+) bpf .*handle 0x1 (engine_\S+)")


@attrs.frozen
class Listed:
    hook: str
    prio: int
    name: str


async def engine_filters(dev: str) -> list[Listed]:
    """Every engine filter on both clsact hooks of ``dev``."""
    found = []
    for hook in ("ingress", "egress"):
        out = await sh("tc", "filter", "show", "dev", dev, hook, check=False)
        found += [Listed(hook, int(m[1]), m[2]) for m in map(_FILTER.search, out.splitlines()) if m]
    return found


def owned_by(filters: list[Listed], pid: int) -> list[Listed]:
    return [f for f in filters if f.name.startswith(f"engine_{pid}.")]


def distinct_priorities(filters: list[Listed]) -> bool:
    """Filters on one hook never share a priority (hooks have priorities of their own)."""
    return len({(f.hook, f.prio) for f in filters}) == len(filters)


def echoes(records: list[dict[str, Any]], gadget: str, container: str) -> list[dict[str, Any]]:
    return [
        r["data"]
        for r in records
        if r["type"] == "event"
        and r["gadget"] == gadget
        and r["container"] is not None
        and r["container"]["name"] == container
    ]


def seqs(data: list[dict[str, Any]], **match: int) -> Counter[int]:
    """How often each sequence number was seen among the records matching ``match``."""
    return Counter(d["seq"] for d in data if all(d[k] == v for k, v in match.items()))


def attached_to(records: list[dict[str, Any]], container: str) -> set[tuple[str, str]]:
    return {
        (r["gadget"], r["program"])
        for r in records
        if r["type"] == "attached" and r["container"] == container
    }


async def test_two_gadgets_in_one_engine_both_see_every_packet(container: str) -> None:
    records: list[dict[str, Any]] = []
    with trio.fail_after(40):
        async with (
            open_engine(
                ICMP_ECHO, ECHO_REPLIES, select=[f"name={container}"], iter_interval=3600
            ) as eng,
            trio.open_nursery() as nursery,
        ):

            async def collect() -> None:
                async for record in eng.events():
                    records.append(record.to_json())

            nursery.start_soon(collect)
            while len(attached_to(records, container)) < 3:  # noqa: ASYNC110 - polls a list
                await trio.sleep(0.02)
            (veth,) = {r["interface"] for r in records if r["type"] == "attached"}
            filters = await engine_filters(veth)
            # Both gadgets' `into_container` on the same hook: same name, distinct priorities.
            # (Engines of other test runs on this host may have filters here too.)
            assert len(owned_by(filters, os.getpid())) == 3
            assert distinct_priorities(filters)
            await ping(container, 4)
            while len(echoes(records, "echo_replies", container)) < 4:  # noqa: ASYNC110
                await trio.sleep(0.02)
            eng.stop()
    assert owned_by(await engine_filters(veth), os.getpid()) == []
    first = echoes(records, "icmp_echo", container)
    second = echoes(records, "echo_replies", container)
    every = Counter(range(4))
    assert seqs(first, type=REQUEST, direction=OUT_OF) == every, first
    assert seqs(first, type=REPLY, direction=INTO) == every, first
    assert seqs(second) == every, second
    assert all(r["gadget"] in ("icmp_echo", "echo_replies") for r in records if "gadget" in r)


async def test_concurrent_attaches_on_one_hook_take_distinct_priorities(container: str) -> None:
    loaded = await load_gadget(Gadget.from_file(ICMP_ECHO))
    try:
        fd = loaded.program("into_container").fd
        pid = (await sh("docker", "inspect", "-f", "{{.State.Pid}}", container)).strip()
        with trio.fail_after(30):
            async with NetnsHandle.from_pid(int(pid)) as handle:
                (peer,) = await find_host_peers(handle, "into_container")
                names = [f"p{i}" for i in range(8)]
                async with attached_at_once(fd, peer, names) as filters:
                    assert len({f.prio for f in filters}) == len(names)
                    listed = owned_by(await engine_filters(peer.host_ifname), os.getpid())
                    assert sorted(f.prio for f in listed) == sorted(f.prio for f in filters)
                assert owned_by(await engine_filters(peer.host_ifname), os.getpid()) == []
    finally:
        loaded.close()


@asynccontextmanager
async def attached_at_once(
    fd: int, peer: HostPeer, programs: list[str]
) -> AsyncIterator[list[TcFilter]]:
    """Attach ``fd`` under several names from concurrent tasks: they race for priorities."""
    filters: list[TcFilter] = []
    release = trio.Event()
    ready = trio.Semaphore(0)

    async def one(program: str) -> None:
        async with attach_classifier(fd, program, peer, Direction.INGRESS) as tc_filter:
            filters.append(tc_filter)
            ready.release()
            await release.wait()

    async with trio.open_nursery() as nursery:
        for program in programs:
            nursery.start_soon(one, program)
        for _ in programs:
            await ready.acquire()
        try:
            yield filters
        finally:
            release.set()


@attrs.define
class EngineProcess:
    """``python -m engine run ... --output json`` with its stdout read as JSON lines."""

    process: trio.Process
    records: list[dict[str, Any]] = attrs.Factory(list)
    stderr: list[str] = attrs.Factory(list)
    _changed: trio.Event = attrs.Factory(trio.Event)
    _read_all: trio.Event = attrs.Factory(trio.Event)

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    async def read(self) -> None:
        assert self.process.stdout is not None and self.process.stderr is not None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._lines, self.process.stderr, self.stderr.append)
            await self._lines(
                self.process.stdout, lambda line: self.records.append(json.loads(line))
            )
        self._read_all.set()

    async def finished(self) -> int:
        """The exit code, once everything the process wrote has been read."""
        code = await self.process.wait()
        await self._read_all.wait()
        return int(code)

    async def _lines(self, stream: trio.abc.ReceiveStream, take: Callable[[str], None]) -> None:
        pending = b""
        async for chunk in stream:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                take(line.decode())
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for(self, ready: Callable[[list[dict[str, Any]]], bool]) -> None:
        while not ready(self.records):
            if self.process.returncode is not None:
                raise AssertionError(f"engine {self.pid} ended: {self.stderr}")
            with trio.move_on_after(0.2):  # also notices the process ending
                await self._changed.wait()


@pytest.fixture
async def engines(docker_daemon: None) -> AsyncIterator[Callable[..., Any]]:
    """Starts engine processes; whatever happens, none is left running and no filter of a
    dead one is left behind."""
    started: list[EngineProcess] = []
    async with trio.open_nursery() as nursery:

        async def start(*args: str) -> EngineProcess:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "engine", "run", *args, "--output", "json"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=ROOT,
            )
            engine = EngineProcess(process)
            started.append(engine)
            nursery.start_soon(engine.read)
            return engine

        try:
            yield start
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(20):
                for engine in started:
                    if engine.process.returncode is None:
                        engine.process.send_signal(signal.SIGKILL)
                    await engine.process.wait()
                await remove_orphan_filters(owner_alive)


async def test_engines_side_by_side_survive_a_killed_one(
    container: str, engines: Callable[..., Any]
) -> None:
    select = f"name={container}"
    programs = {("icmp_echo", "into_container"), ("icmp_echo", "out_of_container")}

    def attached(records: list[dict[str, Any]]) -> bool:
        return attached_to(records, container) == programs

    with trio.fail_after(50):
        # Started together: their filters race for priorities on the same veth.
        first, second = (
            await engines(str(ICMP_ECHO), "--select", select),
            await engines(str(ICMP_ECHO), "--select", select),
        )
        await first.wait_for(attached)
        await second.wait_for(attached)
        (veth,) = {r["interface"] for r in second.records if r["type"] == "attached"}
        filters = await engine_filters(veth)
        assert len(owned_by(filters, first.pid)) == 2
        assert len(owned_by(filters, second.pid)) == 2
        assert distinct_priorities(filters)
        survivor = owned_by(filters, second.pid)

        async with trio.open_nursery() as nursery:
            # One ping run across the kill and the third engine's start-up and cleanup.
            nursery.start_soon(ping, container, 30)

            def pinged(seen: int) -> Callable[[list[dict[str, Any]]], bool]:
                return lambda records: len(echoes(records, "icmp_echo", container)) >= seen

            await first.wait_for(pinged(4))
            first.process.send_signal(signal.SIGKILL)
            await first.process.wait()
            assert len(owned_by(await engine_filters(veth), first.pid)) == 2  # orphans now
            third = await engines(str(ICMP_ECHO), "--select", select)
            await third.wait_for(attached)
            filters = await engine_filters(veth)
            # The killed engine's filters, and only those, were removed by the third one.
            assert owned_by(filters, first.pid) == []
            assert owned_by(filters, second.pid) == survivor
            assert len(owned_by(filters, third.pid)) == 2
            await third.wait_for(pinged(1))  # it saw the same ping run: they overlapped
        long_run = echoes(second.records, "icmp_echo", container)
        (ping_id,) = {d["id"] for d in long_run}
        await second.wait_for(pinged(60))

        await ping(container, 3)
        for engine in (second, third):
            await engine.wait_for(
                lambda records: (
                    sum(d["id"] != ping_id for d in echoes(records, "icmp_echo", container)) >= 6
                )
            )
        for engine in (second, third):
            engine.process.send_signal(signal.SIGINT)
        assert await second.finished() == 0
        assert await third.finished() == 0
    assert owned_by(await engine_filters(veth), second.pid) == []
    assert owned_by(await engine_filters(veth), third.pid) == []

    every = Counter(range(30))
    kept = echoes(second.records, "icmp_echo", container)
    # The survivor saw every packet of the long run, once: no gap around the kill or cleanup.
    for match in ({"type": REQUEST, "direction": OUT_OF}, {"type": REPLY, "direction": INTO}):
        assert seqs([d for d in kept if d["id"] == ping_id], **match) == every, match
        assert seqs([d for d in kept if d["id"] != ping_id], **match) == Counter(range(3))
    late = echoes(third.records, "icmp_echo", container)
    tail = seqs([d for d in late if d["id"] == ping_id], type=REQUEST)
    # From its attachment on, the third engine saw every packet too.
    assert tail == Counter(range(min(tail), 30)), tail
    assert seqs([d for d in late if d["id"] != ping_id], type=REPLY) == Counter(range(3))
    for engine in (second, third):
        assert all(r["gadget"] == "icmp_echo" for r in engine.records if r["type"] == "event")


async def test_a_broken_gadget_beside_a_good_one(
    container: str, engines: Callable[..., Any]
) -> None:
    select = f"name={container}"
    with trio.fail_after(30):
        run = await engines(str(BROKEN), str(ICMP_ECHO), "--select", select)
        await run.wait_for(
            lambda records: ("icmp_echo", "out_of_container") in attached_to(records, container)
        )
        await ping(container, 2)
        await run.wait_for(lambda records: len(echoes(records, "icmp_echo", container)) >= 4)
        run.process.send_signal(signal.SIGINT)
        assert await run.finished() == 0
        (failed,) = [r for r in run.records if r["type"] == "gadget_failed"]
        assert failed["gadget"] == "broken"
        assert failed["path"] == str(BROKEN)
        assert failed["error_type"] == "CompileError"
        assert "no_such_name" in failed["error"]
        assert any("gadget broken" in line for line in run.stderr)
        events = [r for r in run.records if r["type"] == "event"]
        assert events
        assert all(r["gadget"] == "icmp_echo" for r in events)

        strict = await engines("--all-or-nothing", str(BROKEN), str(ICMP_ECHO), "--select", select)
        assert await strict.finished() == 2
        assert not [r for r in strict.records if r["type"] == "attached"]
        assert any("broken.c" in line for line in strict.stderr)
