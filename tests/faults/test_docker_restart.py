"""The Docker daemon stopped, restarted, killed with SIGKILL and restarted again, while
containers come and go and the engine runs a per-netns gadget and execsnoop.

One test on purpose: restarting dockerd stops every container on the machine.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from engine import open_engine
from tests.conftest import EXAMPLES, ROOT, TEST_IMAGE
from tests.faults.kernel_state import arun, filters_of, open_fds, remove_containers, run, tag

pytestmark = [pytest.mark.integration, pytest.mark.docker]

PIDFILE = Path("/var/run/docker.pid")


async def stop_dockerd(signum: int) -> None:
    pid = int((await trio.Path(PIDFILE).read_text()).strip())
    pidfd = os.pidfd_open(pid)  # readable once the process has exited
    try:
        os.kill(pid, signum)
        with trio.fail_after(60):
            await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)


async def start_dockerd() -> None:
    await arun(str(ROOT / "scripts" / "start-docker"))


@pytest.fixture
def restores_dockerd(docker_daemon: None) -> Iterator[None]:
    try:
        yield
    finally:
        run(str(ROOT / "scripts" / "start-docker"), check=False)


@pytest.fixture
def names(restores_dockerd: None) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    # Torn down before restores_dockerd: the daemon must answer to remove them.
    run(str(ROOT / "scripts" / "start-docker"), check=False)
    remove_containers(made)


def running_ours(prefix: str) -> set[str]:
    out = run("docker", "ps", "--filter", f"name={prefix}", "--format", "{{.Names}}", check=False)
    return set(out.split())


def container_of(record: dict[str, Any]) -> str | None:
    container = record.get("container")
    return container.get("name") if isinstance(container, dict) else None


def engine_view(records: list[dict[str, Any]], prefix: str) -> set[str]:
    """The containers the records say are running: the last word about each wins."""
    running: set[str] = set()
    for r in records:
        name = container_of(r)
        if not name or not name.startswith(prefix):
            continue
        if r["type"] == "container_added":
            running.add(name)
        elif r["type"] == "container_removed":
            running.discard(name)
    return running


async def docker_run(name: str, *options: str, check: bool = True) -> None:
    await arun(
        "docker", "run", "-d", "--stop-timeout", "1", *options, "--name", name, TEST_IMAGE,
        "sleep", "600", check=check,
    )  # fmt: skip


async def churn(prefix: str, names: list[str]) -> None:
    """Start a container and remove an older one, over and over; failures while the daemon is
    down are expected and ignored."""
    while True:
        name = f"{prefix}-churn-{tag()}"
        names.append(name)
        await docker_run(name, check=False)
        if len(names) > 4:
            await arun("docker", "rm", "-f", names[-4], check=False)
        await trio.sleep(0.3)


async def until(what: str, ready: Any, seconds: float = 60) -> None:
    with trio.move_on_after(seconds):
        while not ready():  # noqa: ASYNC110
            await trio.sleep(0.1)
    assert ready(), what


def count(records: list[dict[str, Any]], kind: str) -> int:
    return sum(1 for r in records if r["type"] == kind)


async def stop_and_restart_twice(records: list[dict[str, Any]]) -> None:
    """SIGTERM, then SIGKILL (a stale pid file left behind); each gap reported and closed."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        gaps = count(records, "source_disconnected")
        await stop_dockerd(signum)
        await until("gap reported", lambda g=gaps: count(records, "source_disconnected") > g)
        await trio.sleep(0.5)
        await start_dockerd()
        await until("reconnected", lambda g=gaps: count(records, "source_reconnected") > g, 30)
        await trio.sleep(1)


async def test_daemon_stop_kill_restart_while_containers_churn(names: list[str]) -> None:
    prefix = f"engine-test-{tag()}"
    plain, always, late = f"{prefix}-plain", f"{prefix}-always", f"{prefix}-late"
    names.extend([plain, always, late])
    records: list[dict[str, Any]] = []
    fds = open_fds()
    gadgets = [EXAMPLES / "tc_bytes.c", EXAMPLES / "execsnoop.c"]
    with trio.fail_after(300):
        async with (
            open_engine(*gadgets, select=[f"name={prefix}-*"], iter_interval=3600) as eng,
            trio.open_nursery() as nursery,
        ):

            async def collect() -> None:
                async for record in eng.events():
                    records.append(record.to_json())

            nursery.start_soon(collect)
            await docker_run(plain)
            await docker_run(always, "--restart", "always")
            await until("both seen", lambda: {plain, always} <= engine_view(records, prefix))
            async with trio.open_nursery() as churning:
                churning.start_soon(churn, prefix, names)
                await trio.sleep(1)
                await stop_and_restart_twice(records)
                churning.cancel_scope.cancel()
            # Settled: what the engine believes runs is what runs, and it still attaches.
            await docker_run(late)
            await until("late container seen", lambda: late in engine_view(records, prefix))
            await until(
                "view matches docker",
                lambda: engine_view(records, prefix) == running_ours(prefix),
                15,
            )
            await until(
                "late container attached",
                lambda: any(r["type"] == "attached" and r["container"] == late for r in records),
                15,
            )
            eng.stop()
    # Every container that lived across a gap was reported added and, gone, removed.
    for name in (plain, always):
        kinds = [r["type"] for r in records if container_of(r) == name]
        assert kinds[0] == "container_added", (name, kinds)
        assert "container_removed" in kinds, (name, kinds)
    assert count(records, "source_disconnected") == count(records, "source_reconnected") == 2
    # Every attachment ended with the engine; nothing of ours is left.
    key = ("program", "netns", "interface")
    attached = [tuple(r[k] for k in key) for r in records if r["type"] == "attached" and r["netns"]]
    detached = [tuple(r[k] for k in key) for r in records if r["type"] == "detached"]
    assert sorted(attached) == sorted(detached)
    assert filters_of(os.getpid()) == []
    assert open_fds() <= fds  # fewer: an earlier test's garbage was collected meanwhile
