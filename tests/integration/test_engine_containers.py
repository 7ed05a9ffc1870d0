"""The whole engine against real containers: selection in the kernel, names on events,
per-netns classifiers counting exactly what a container sends and receives, nothing left."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import engine
from engine.records import Event
from tests.conftest import our_tc_filters

pytestmark = [pytest.mark.integration, pytest.mark.docker]

ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("ENGINE_TEST_IMAGE", "engine-test:latest")
BRIDGE = "172.17.0.1"  # the docker bridge: test traffic goes nowhere else


def docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def names(docker_daemon: None) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    if made:
        subprocess.run(["docker", "rm", "-f", *made], capture_output=True, check=False)


def start(names: list[str], name: str, *command: str) -> None:
    names.append(name)
    docker("run", "-d", "--name", name, IMAGE, *command)


async def test_selection_filters_in_kernel_and_names_events(names: list[str]) -> None:
    tag = uuid.uuid4().hex[:6]
    chosen, other = f"engine-test-{tag}-chosen", f"engine-test-{tag}-other"
    start(names, chosen, "sleep", "300")  # started before the engine
    seen: list[dict[str, Any]] = []
    with trio.fail_after(60):
        async with engine.open_engine(
            ROOT / "examples/execsnoop.c", select=[f"name={chosen}"], iter_interval=3600
        ) as eng:
            await trio.to_thread.run_sync(start, names, other, "sleep", "300")  # and after
            for _ in range(3):
                await trio.to_thread.run_sync(docker, "exec", chosen, "/bin/true")
                await trio.to_thread.run_sync(docker, "exec", other, "/bin/true")
            await trio.sleep(0.5)
            eng.stop()
            async for record in eng.events():
                if isinstance(record, Event):
                    seen.append(record.to_json())
    true_execs = [e for e in seen if e["data"]["filename"] == "/bin/true"]
    assert len(true_execs) == 3, true_execs
    assert all(e["container"]["name"] == chosen for e in true_execs)
    # The other container's execs never reached Python: every event came from the selection.
    assert all(e["container"] is not None and e["container"]["name"] == chosen for e in seen)


async def test_classifiers_count_exactly_per_container(names: list[str]) -> None:
    tag = uuid.uuid4().hex[:6]
    pinger, quiet = f"engine-test-{tag}-ping", f"engine-test-{tag}-quiet"
    records: list[Any] = []
    with trio.fail_after(90):
        async with engine.open_engine(ROOT / "examples/tc_bytes.c", iter_interval=3600) as eng:
            await trio.to_thread.run_sync(start, names, quiet, "sleep", "300")
            await trio.to_thread.run_sync(start, names, pinger, "sleep", "300")
            with trio.fail_after(30):
                while sum(1 for r in eng.world.containers.values() if r.name == pinger) == 0 or (  # noqa: ASYNC110
                    len(eng.per_netns.running) < 2
                    or any(s.attached_at is None for s in eng.per_netns.running.values())
                ):
                    await trio.sleep(0.05)
            await trio.to_thread.run_sync(
                docker, "exec", pinger, "ping", "-c", "4", "-i", "0.2", BRIDGE
            )
            await trio.sleep(0.5)
            eng.stop()
            async for record in eng.events():
                records.append(record.to_json())
    assert our_tc_filters() == []
    icmp = [r for r in records if r["type"] == "event" and r["data"]["protocol"] == 1]
    by_container: dict[str | None, dict[int, int]] = {}
    for r in icmp:
        name = r["container"]["name"] if r["container"] else None
        by_container.setdefault(name, {0: 0, 1: 0})[r["data"]["direction"]] += 1
    # 4 echo requests out of the pinger, 4 replies into it; nothing for the quiet one.
    assert by_container.get(pinger) == {0: 4, 1: 4}, by_container
    assert quiet not in by_container
    attached = [r for r in records if r["type"] == "attached"]
    assert {r["program"] for r in attached} == {"into_container", "out_of_container"}


async def test_selection_cannot_change_once_stopped(root: None) -> None:
    with trio.fail_after(60):
        async with engine.open_engine(ROOT / "examples/execsnoop.c", containers=False) as eng:
            running = eng.set_selection(["name=engine-test-*"])
            eng.stop()
            with pytest.raises(engine.EngineStoppedError, match="stopped"):
                eng.set_selection(["name=other"])
            assert eng.selection == running
            assert [r async for r in eng.events()] != []  # what was buffered, then the end
