"""A netns deleted, its veth removed, or its container killed at every step of an attach.

The seam ``engine.per_netns.attach_step`` is awaited before each step; the test does its damage
there and lets the attach go on. Whatever the step, each program ends with one clear story for
that netns, either ``attach_failed`` or ``attached`` then ``detached``, and nothing of ours is
left in the kernel or among the process's fds.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from engine import open_engine
from engine import per_netns as per_netns_module
from engine.world import NetnsTarget
from tests.conftest import EXAMPLES, TEST_IMAGE
from tests.faults.kernel_state import (
    NamedNetns,
    arun,
    container_name,
    filters_of,
    open_fds,
    remove_containers,
)

pytestmark = pytest.mark.integration

STEPS = ("open", "attach", "add_filter", "attached")
SOCKET = 'SEC("socket")\nint count_all(struct __sk_buff *skb)\n{\n    return 0;\n}\n'
PROGRAMS = {"into_container", "out_of_container", "count_all"}


def stories(records: list[dict[str, Any]], inode: int) -> dict[str, list[str]]:
    """Per program, the attach records about netns ``inode``, in order."""
    out: dict[str, list[str]] = {}
    for r in records:
        if r.get("type") in ("attached", "detached", "attach_failed") and r["netns"] == inode:
            out.setdefault(r["program"], []).append(r["type"])
    return out


def assert_clear(story: dict[str, list[str]], where: str) -> None:
    assert set(story) == PROGRAMS, (where, story)
    for program, seen in story.items():
        assert seen in (["attach_failed"], ["attached", "detached"]), (where, program, seen)


@pytest.fixture
def gadgets(root: None, tmp_path: Path) -> list[str]:
    socket = tmp_path / "count_all.c"
    socket.write_text(SOCKET)
    return [str(EXAMPLES / "tc_bytes.c"), str(socket)]


@pytest.fixture
def seam() -> Iterator[Callable[[Callable[[str, NetnsTarget], Awaitable[None]]], None]]:
    def install(hook: Callable[[str, NetnsTarget], Awaitable[None]]) -> None:
        per_netns_module.attach_step = hook

    yield install
    per_netns_module.attach_step = None


Seam = Callable[[Callable[[str, NetnsTarget], Awaitable[None]]], None]


async def _collect(eng: Any, records: list[dict[str, Any]]) -> None:
    async for record in eng.events():
        records.append(record.to_json())


async def test_named_netns_damaged_at_every_step(gadgets: list[str], seam: Seam) -> None:
    cases = [(step, damage) for step in STEPS for damage in ("netns", "veth")]
    # Planned by name before the netns exists, so that the engine cannot reach it first.
    planned: dict[str, tuple[str, str, NamedNetns]] = {}
    created: dict[str, trio.Event] = {}
    damaged: dict[int, str] = {}  # netns inode -> what was done
    records: list[dict[str, Any]] = []

    async def damage_at(step: str, target: NetnsTarget) -> None:
        case = planned.get(os.path.basename(target.path))
        if case is None or case[0] != step or target.inode in damaged:
            return
        _, damage, netns = case
        damaged[target.inode] = f"{damage} removed before {step}"
        # The engine sees the netns as soon as it exists: damage only what was fully made.
        await created[netns.name].wait()
        if damage == "netns":
            await arun("ip", "netns", "del", netns.name)
        else:
            await arun("ip", "link", "del", netns.host_if)

    def settled() -> bool:
        return all(
            len([v for v in stories(records, i).values() if v]) == len(PROGRAMS)
            and not _unfinished(stories(records, i))
            for i in damaged
        )

    seam(damage_at)
    fds = open_fds()
    try:
        with trio.fail_after(150):
            async with (
                open_engine(*gadgets, iter_interval=3600) as eng,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(_collect, eng, records)
                for step, damage in cases:
                    netns = NamedNetns.named()
                    planned[netns.name] = (step, damage, netns)
                    created[netns.name] = trio.Event()
                    await trio.to_thread.run_sync(netns.create)
                    created[netns.name].set()
                    with trio.fail_after(20):
                        while len(damaged) < len(planned):  # noqa: ASYNC110
                            await trio.sleep(0.05)
                # Every attempt ends: a missing veth is waited for a few seconds.
                with trio.fail_after(30):
                    while not all(  # noqa: ASYNC110
                        len([v for v in stories(records, i).values() if v]) == len(PROGRAMS)
                        for i in damaged
                    ):
                        await trio.sleep(0.1)
                eng.stop()
    finally:
        for _, _, netns in planned.values():
            netns.remove()
    assert settled()
    for inode, what in damaged.items():
        assert_clear(
            stories(records, inode), what + repr([r for r in records if r.get("netns") == inode])
        )
    assert filters_of(os.getpid()) == []
    assert open_fds() == fds


async def test_container_killed_at_every_step(
    gadgets: list[str], seam: Seam, docker_daemon: None
) -> None:
    names = {step: container_name(f"kill-{step}") for step in STEPS}
    by_netns: dict[int, str] = {}
    killed: set[str] = set()
    records: list[dict[str, Any]] = []

    async def kill_at(step: str, target: NetnsTarget) -> None:
        for container in target.containers:
            if names.get(step) == container.name and container.name not in killed:
                killed.add(container.name)
                by_netns[target.inode] = step
                await arun("docker", "kill", container.name)

    seam(kill_at)
    fds = open_fds()
    try:
        with trio.fail_after(150):
            async with (
                open_engine(*gadgets, iter_interval=3600) as eng,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(_collect, eng, records)
                for step in STEPS:
                    await arun("docker", "run", "-d", "--name", names[step], *_IMAGE_SLEEP)
                with trio.fail_after(60):
                    while len(killed) < len(STEPS) or any(  # noqa: ASYNC110
                        _unfinished(stories(records, i)) for i in by_netns
                    ):
                        await trio.sleep(0.1)
                eng.stop()
    finally:
        remove_containers(list(names.values()))
    assert len(by_netns) == len(STEPS)
    for inode, step in by_netns.items():
        story = stories(records, inode)
        # The engine may learn of the death before it tries a program: then that program has
        # no record at all (the container_removed record tells the story); never half of one.
        for program, seen in story.items():
            assert seen in (["attach_failed"], ["attached", "detached"]), (step, program, seen)
    assert filters_of(os.getpid()) == []
    assert open_fds() == fds


def _unfinished(story: dict[str, list[str]]) -> bool:
    return any(seen == ["attached"] for seen in story.values())


_IMAGE_SLEEP = ("--rm", TEST_IMAGE, "sleep", "600")
