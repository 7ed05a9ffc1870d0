"""The Docker daemon stopped, restarted, killed with SIGKILL and restarted again, while
containers come and go and the engine runs a per-netns gadget and execsnoop.

One test on purpose: restarting dockerd stops every container on the machine.
"""

from __future__ import annotations

import signal
from typing import Any

import pytest
import trio

from engine import open_engine
from tests.support.commands import adocker, docker
from tests.support.constants import EXAMPLES
from tests.support.docker import Containers, start_dockerd, stop_dockerd
from tests.support.recorder import Recorder, recording, unpaired

pytestmark = [pytest.mark.integration, pytest.mark.docker]

STOP_FAST = ("--stop-timeout", "1")


def running_ours(containers: Containers) -> set[str]:
    out = docker(
        "ps", "--filter", f"name={containers.prefix}", "--format", "{{.Names}}", check=False
    )
    return set(out.split())


def container_of(record: dict[str, Any]) -> str | None:
    container = record.get("container")
    return container.get("name") if isinstance(container, dict) else None


def engine_view(records: list[dict[str, Any]], containers: Containers) -> set[str]:
    """The containers the records say are running: the last word about each wins."""
    running: set[str] = set()
    for r in records:
        name = container_of(r)
        if not name or not name.startswith(containers.prefix):
            continue
        if r["type"] == "container_added":
            running.add(name)
        elif r["type"] == "container_removed":
            running.discard(name)
    return running


async def churn(containers: Containers) -> None:
    """Start a container and remove an older one, over and over; failures while the daemon is
    down are expected and ignored."""
    names: list[str] = []
    while True:
        names.append(await containers.run(f"churn-{len(names)}", options=STOP_FAST, check=False))
        if len(names) > 4:
            await adocker("rm", "-f", names[-4], check=False)
        await trio.sleep(0.3)


def count(records: list[dict[str, Any]], kind: str) -> int:
    """The Docker source's records of ``kind`` (the other runtimes' sources have their own)."""
    return sum(1 for r in records if r["type"] == kind and r["runtime"] == "docker")


async def stop_and_restart(rec: Recorder, signum: int) -> None:
    """The daemon stopped with ``signum`` and started again; the gap reported and closed."""
    gaps = count(rec.records, "source_disconnected")
    await stop_dockerd(signum)
    await rec.until(lambda: count(rec.records, "source_disconnected") > gaps, 60, "a gap")
    await trio.sleep(0.5)  # the daemon stays down a moment while the churn goes on
    await trio.to_thread.run_sync(start_dockerd)
    await rec.until(lambda: count(rec.records, "source_reconnected") > gaps, 30, "a reconnection")
    await trio.sleep(1)  # and up a moment before the next stop


async def test_daemon_stop_kill_restart_while_containers_churn(
    containers: Containers, restores_dockerd: None
) -> None:
    plain, always, late = (containers.name(n) for n in ("plain", "always", "late"))
    gadgets = [EXAMPLES / "tc_bytes.c", EXAMPLES / "execsnoop.c"]
    with trio.fail_after(300):
        async with (
            open_engine(*gadgets, select=containers.selection, iter_interval=3600) as eng,
            recording(eng) as rec,
        ):
            await containers.run("plain", options=STOP_FAST)
            await containers.run("always", options=(*STOP_FAST, "--restart", "always"))
            await rec.until(
                lambda: {plain, always} <= engine_view(rec.records, containers), 60, "both seen"
            )
            async with trio.open_nursery() as churning:
                churning.start_soon(churn, containers)
                await trio.sleep(1)
                # SIGKILL leaves a stale pid file behind.
                for signum in (signal.SIGTERM, signal.SIGKILL):
                    await stop_and_restart(rec, signum)
                churning.cancel_scope.cancel()
            # Settled: what the engine believes runs is what runs, and it still attaches.
            await containers.run("late", options=STOP_FAST)
            await rec.until(lambda: late in engine_view(rec.records, containers), 60, "late seen")
            with trio.move_on_after(15):
                # Docker's own view sends no notice when it settles: look again.
                while engine_view(rec.records, containers) != running_ours(containers):  # noqa: ASYNC110
                    await trio.sleep(0.1)
            assert engine_view(rec.records, containers) == running_ours(containers)
            await rec.until(
                lambda: rec.attached_programs(container=late), 15, "late container attached"
            )
    records = rec.records
    # Every container that lived across a gap was reported added and, gone, removed.
    for name in (plain, always):
        kinds = [r["type"] for r in records if container_of(r) == name]
        assert kinds[0] == "container_added", (name, kinds)
        assert "container_removed" in kinds, (name, kinds)
    assert count(records, "source_disconnected") == count(records, "source_reconnected") == 2
    # Every attachment ended with the engine.
    assert not unpaired(records), unpaired(records)
