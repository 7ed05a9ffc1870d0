"""The whole engine against real containers: selection in the kernel, names on events,
per-netns classifiers counting exactly what a container sends and receives, nothing left."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

import engine
from tests.support.constants import BRIDGE, EXAMPLES
from tests.support.docker import Containers
from tests.support.recorder import recorded

pytestmark = [pytest.mark.integration, pytest.mark.docker]


async def test_selection_filters_in_kernel_and_names_events(containers: Containers) -> None:
    chosen = containers.start("chosen")  # started before the engine
    with trio.fail_after(60):
        async with recorded(
            EXAMPLES / "execsnoop.c", select=[f"name={chosen}"], iter_interval=3600
        ) as (_, rec):
            other = await containers.run("other")  # and after
            for _ in range(3):
                await containers.exec(chosen, "/bin/true")
                await containers.exec(other, "/bin/true")
            # The ring buffer keeps the kernel's order: once this exec is seen, any event the
            # execs before it gave has been seen too.
            await containers.exec(chosen, "/bin/echo")
            await rec.until(
                lambda: [e for e in rec.events() if e["data"]["filename"] == "/bin/echo"],
                10,
                "the exec of /bin/echo",
            )
    seen = rec.events()
    true_execs = [e for e in seen if e["data"]["filename"] == "/bin/true"]
    assert len(true_execs) == 3, true_execs
    assert all(e["container"]["name"] == chosen for e in true_execs)
    # The other container's execs never reached Python: every event came from the selection.
    assert all(e["container"] is not None and e["container"]["name"] == chosen for e in seen)


async def test_classifiers_count_exactly_per_container(containers: Containers) -> None:
    programs = {"into_container", "out_of_container"}
    with trio.fail_after(90):
        async with recorded(EXAMPLES / "tc_bytes.c", iter_interval=3600) as (_, rec):
            quiet = await containers.run("quiet")
            pinger = await containers.run("ping")
            # Without a selection nothing waits for Docker to say whose netns it is: the attach
            # records may name no container, but they name the netns; the pinger's packets are
            # named once Docker has reported it.
            netns = [await containers.netns(c) for c in (quiet, pinger)]
            await rec.until(
                lambda: (
                    all(rec.attached_programs(netns=n) == programs for n in netns)
                    and pinger in {r["container"]["name"] for r in rec.of_type("container_added")}
                ),
                30,
                "both containers attached, the pinger reported",
            )
            await containers.exec(pinger, "ping", "-c", "4", "-i", "0.2", BRIDGE)
            # A larger ping last: the ring buffer keeps the kernel's order, so once its reply is
            # seen, every packet before it has been counted (an extra one too).
            await containers.exec(pinger, "ping", "-c", "1", "-s", str(MARKER), BRIDGE)
            await rec.until(
                lambda: [r for r in icmp_of(rec.events(), pinger) if is_marker(r, INTO)],
                10,
                "the reply to the last ping",
            )
    by_container: dict[str | None, dict[int, int]] = {}
    for r in icmp_of(rec.events()):
        if is_marker(r):
            continue
        name = r["container"]["name"] if r["container"] else None
        by_container.setdefault(name, {0: 0, 1: 0})[r["data"]["direction"]] += 1
    # 4 echo requests out of the pinger, 4 replies into it; nothing for the quiet one.
    assert by_container.get(pinger) == {0: 4, 1: 4}, by_container
    assert quiet not in by_container
    assert {r["program"] for r in rec.of_type("attached")} == programs


MARKER = 200  # bytes of ICMP payload: the pings counted have 56
INTO = 0


def is_marker(packet: dict[str, Any], direction: int | None = None) -> bool:
    data = packet["data"]
    return bool(data["len"] > MARKER and direction in (None, data["direction"]))


def icmp_of(events: list[dict[str, Any]], container: str | None = None) -> list[dict[str, Any]]:
    """ICMP packets (of ``container`` when given)."""
    return [
        r
        for r in events
        if r["data"]["protocol"] == 1
        and (container is None or (r["container"] or {}).get("name") == container)
    ]


async def test_wait_for_a_container_attached(containers: Containers) -> None:
    """``eng.wait_for`` is what a script (or a test) waits on: no polling of internals."""
    name = containers.name("awaited")
    with trio.fail_after(60):
        async with engine.open_engine(
            EXAMPLES / "dns.c", select=containers.selection, iter_interval=3600
        ) as eng:
            async with trio.open_nursery() as nursery:
                got: list[engine.Record] = []

                async def wait() -> None:
                    got.append(
                        await eng.wait_for(
                            lambda r: isinstance(r, engine.ProgramAttached) and r.container == name
                        )
                    )

                nursery.start_soon(wait)
                await trio.testing.wait_all_tasks_blocked()
                await containers.run("awaited")
            (attached,) = got
            assert isinstance(attached, engine.ProgramAttached)
            assert attached.kind == "socket"
            assert attached.netns is not None
