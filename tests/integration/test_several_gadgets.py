"""Several gadgets in one engine, and several engines side by side, on real containers.

Traffic: ICMP echo from a test container to the docker bridge, nothing else. The gadgets under
tests/integration/gadgets/ report every echo request and reply with the ping's id and sequence
number, so a missed packet (a gap) or a packet seen twice shows up as exactly that.
"""

from __future__ import annotations

import os
import re
import signal
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
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
from tests.support.commands import adocker
from tests.support.constants import BRIDGE, GADGETS
from tests.support.docker import Containers
from tests.support.kernel_state import engine_filters
from tests.support.process import EngineProcess, spawn
from tests.support.recorder import recording

pytestmark = [pytest.mark.integration, pytest.mark.docker]

ICMP_ECHO = GADGETS / "icmp_echo.c"  # requests and replies, both directions, ring buffer
ECHO_REPLIES = GADGETS / "echo_replies.c"  # replies into the container, perf buffer
BROKEN = GADGETS / "broken.c"  # does not compile
REQUEST, REPLY = 8, 0
INTO, OUT_OF = 0, 1


async def ping(container: str, count: int) -> None:
    await adocker("exec", container, "ping", "-c", str(count), "-i", "0.2", BRIDGE)


@pytest.fixture
async def container(containers: Containers) -> str:
    return await containers.run("several")


_FILTER = re.compile(r"^\S+ (\w+): .*pref (\d+) bpf .*handle 0x1 (engine_\S+)")


@attrs.frozen
class Listed:
    hook: str
    prio: int
    name: str


async def listed_filters(dev: str) -> list[Listed]:
    """Every engine filter on both clsact hooks of ``dev``."""
    lines = await trio.to_thread.run_sync(engine_filters, dev)
    return [Listed(m[1], int(m[2]), m[3]) for m in map(_FILTER.search, lines) if m]


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
    with trio.fail_after(40):
        async with (
            open_engine(
                ICMP_ECHO, ECHO_REPLIES, select=[f"name={container}"], iter_interval=3600
            ) as eng,
            recording(eng) as rec,
        ):
            await rec.until(lambda: len(attached_to(rec.records, container)) == 3, 30, "attached")
            (veth,) = {r["interface"] for r in rec.of_type("attached")}
            filters = await listed_filters(veth)
            # Both gadgets' `into_container` on the same hook: same name, distinct priorities.
            # (Engines of other test runs on this host may have filters here too.)
            assert len(owned_by(filters, os.getpid())) == 3
            assert distinct_priorities(filters)
            await ping(container, 4)
            await rec.until(
                lambda: len(echoes(rec.records, "echo_replies", container)) >= 4, 10, "4 replies"
            )
    assert owned_by(await listed_filters(veth), os.getpid()) == []
    first = echoes(rec.records, "icmp_echo", container)
    second = echoes(rec.records, "echo_replies", container)
    every = Counter(range(4))
    assert seqs(first, type=REQUEST, direction=OUT_OF) == every, first
    assert seqs(first, type=REPLY, direction=INTO) == every, first
    assert seqs(second) == every, second
    assert all(r["gadget"] in ("icmp_echo", "echo_replies") for r in rec.records if "gadget" in r)


async def test_concurrent_attaches_on_one_hook_take_distinct_priorities(container: str) -> None:
    loaded = await load_gadget(Gadget.from_file(ICMP_ECHO))
    try:
        fd = loaded.program("into_container").fd
        pid = int(await adocker("inspect", "-f", "{{.State.Pid}}", container))
        with trio.fail_after(30):
            async with NetnsHandle.from_pid(pid) as handle:
                (peer,) = await find_host_peers(handle, "into_container")
                names = [f"p{i}" for i in range(8)]
                async with attached_at_once(fd, peer, names) as filters:
                    assert len({f.prio for f in filters}) == len(names)
                    listed = owned_by(await listed_filters(peer.host_ifname), os.getpid())
                    assert sorted(f.prio for f in listed) == sorted(f.prio for f in filters)
                assert owned_by(await listed_filters(peer.host_ifname), os.getpid()) == []
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


Start = Callable[..., Any]


@pytest.fixture
async def engines(docker_daemon: None) -> AsyncIterator[Start]:
    """``await engines(*args)`` starts an engine process; whatever happens, none is left
    running and no filter of a dead one is left behind."""
    started: list[EngineProcess] = []
    async with trio.open_nursery() as nursery:

        async def start(*args: str) -> EngineProcess:
            started.append(await spawn(nursery, *args))
            return started[-1]

        try:
            yield start
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(20):
                for engine in started:
                    await engine.close()
                await remove_orphan_filters(owner_alive)


async def attached_all(engine: EngineProcess, container: str) -> None:
    programs = {("icmp_echo", "into_container"), ("icmp_echo", "out_of_container")}
    await engine.until(lambda: attached_to(engine.records, container) == programs, 30, "attached")


async def pinged(engine: EngineProcess, container: str, seen: int, ping_id: int = -1) -> None:
    """Until ``engine`` has seen ``seen`` echoes (not of the ping run ``ping_id``)."""

    def count() -> int:
        return sum(d["id"] != ping_id for d in echoes(engine.records, "icmp_echo", container))

    await engine.until(lambda: count() >= seen, 30, f"{seen} echoes")


async def test_engines_side_by_side_survive_a_killed_one(container: str, engines: Start) -> None:
    select = f"name={container}"
    with trio.fail_after(50):
        # Started together: their filters race for priorities on the same veth.
        first, second = (
            await engines(str(ICMP_ECHO), "--select", select),
            await engines(str(ICMP_ECHO), "--select", select),
        )
        await attached_all(first, container)
        await attached_all(second, container)
        (veth,) = {r["interface"] for r in second.of_type("attached")}
        filters = await listed_filters(veth)
        assert len(owned_by(filters, first.pid)) == 2
        assert len(owned_by(filters, second.pid)) == 2
        assert distinct_priorities(filters)
        survivor = owned_by(filters, second.pid)

        async with trio.open_nursery() as nursery:
            # One ping run across the kill and the third engine's start-up and cleanup.
            nursery.start_soon(ping, container, 30)
            await pinged(first, container, 4)
            first.process.send_signal(signal.SIGKILL)
            await first.process.wait()
            assert len(owned_by(await listed_filters(veth), first.pid)) == 2  # orphans now
            third = await engines(str(ICMP_ECHO), "--select", select)
            await attached_all(third, container)
            filters = await listed_filters(veth)
            # The killed engine's filters, and only those, were removed by the third one.
            assert owned_by(filters, first.pid) == []
            assert owned_by(filters, second.pid) == survivor
            assert len(owned_by(filters, third.pid)) == 2
            await pinged(third, container, 1)  # it saw the same ping run: they overlapped
        long_run = echoes(second.records, "icmp_echo", container)
        (ping_id,) = {d["id"] for d in long_run}
        await pinged(second, container, 60)

        await ping(container, 3)
        for engine in (second, third):
            await pinged(engine, container, 6, ping_id)
        assert await second.stop() == 0
        assert await third.stop() == 0
    assert owned_by(await listed_filters(veth), second.pid) == []
    assert owned_by(await listed_filters(veth), third.pid) == []

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
        assert all(r["gadget"] == "icmp_echo" for r in engine.events())


async def test_a_broken_gadget_beside_a_good_one(container: str, engines: Start) -> None:
    select = f"name={container}"
    with trio.fail_after(30):
        run = await engines(str(BROKEN), str(ICMP_ECHO), "--select", select)
        await run.until(
            lambda: ("icmp_echo", "out_of_container") in attached_to(run.records, container),
            20,
            "attached",
        )
        await ping(container, 2)
        await run.until(lambda: len(echoes(run.records, "icmp_echo", container)) >= 4, 10, "4")
        assert await run.stop() == 0
        (failed,) = run.of_type("gadget_failed")
        assert failed["gadget"] == "broken"
        assert failed["path"] == str(BROKEN)
        assert failed["error_type"] == "CompileError"
        assert "no_such_name" in failed["error"]
        assert run.lines("gadget broken")
        events = run.events()
        assert events
        assert all(r["gadget"] == "icmp_echo" for r in events)

        strict = await engines("--all-or-nothing", str(BROKEN), str(ICMP_ECHO), "--select", select)
        assert await strict.finished() == 2
        assert not strict.of_type("attached")
        assert strict.lines("broken.c")
