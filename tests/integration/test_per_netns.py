"""Per-netns programs through the whole engine, with real containers and real traffic.

Traffic stays on this machine: container to container, container to the docker bridge and
loopback inside a container, ICMP only (counted exactly; ARP and IPv6 chatter are ignored by
the gadgets). Each test selects its own containers by name, so that containers of other tests
running at the same time are neither traced nor counted.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import engine
from engine.engine import Engine
from engine.gadget.model import Gadget
from engine.world.state import NetnsTarget
from tests.conftest import our_tc_filters

pytestmark = [pytest.mark.integration, pytest.mark.docker]

ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("ENGINE_TEST_IMAGE", "engine-test:latest")
BRIDGE = "172.17.0.1"  # the docker bridge: test traffic goes nowhere else
INTO, OUT_OF = 0, 1  # directions, seen from the container
BY_SOCKET, BY_TC = 0, 1

COUNTER = r"""
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>

#define PACKET_OUTGOING 4

struct icmp_t { u64 netns_id; u32 ifindex; u32 seen_by; u32 direction; };
BPF_RINGBUF_OUTPUT(icmp, 256);

static __always_inline bool is_icmp(struct __sk_buff *skb)
{
    u8 proto = 0;
    if (skb->protocol != htons(ETH_P_IP))
        return false;
    bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct iphdr, protocol), &proto, 1);
    return proto == IPPROTO_ICMP;
}

SEC("socket")
int count_socket(struct __sk_buff *skb)
{
    if (!is_icmp(skb))
        return 0;
    struct icmp_t e = {.netns_id = engine_skb_netns_id(skb), .seen_by = 0,
                       .direction = skb->pkt_type == PACKET_OUTGOING ? 1 : 0};
    icmp.ringbuf_output(&e, sizeof(e), 0);
    return 0;
}

static __always_inline void note_tc(struct __sk_buff *skb, u32 direction)
{
    if (!is_icmp(skb))
        return;
    struct icmp_t e = {.ifindex = skb->ifindex, .seen_by = 1, .direction = direction};
    icmp.ringbuf_output(&e, sizeof(e), 0);
}

SEC("classifier/ingress/count_tc_in")
int count_tc_in(struct __sk_buff *skb) { note_tc(skb, 0); return TC_ACT_UNSPEC; }

SEC("classifier/egress/count_tc_out")
int count_tc_out(struct __sk_buff *skb) { note_tc(skb, 1); return TC_ACT_UNSPEC; }
"""

# Every per-netns kind at once, programs named so that leftovers are recognisable.
CHURN = r"""
SEC("socket")
int churn_sock(struct __sk_buff *skb) { return 0; }

SEC("classifier/ingress/churn_in")
int churn_in(struct __sk_buff *skb) { return TC_ACT_UNSPEC; }

SEC("classifier/egress/churn_out")
int churn_out(struct __sk_buff *skb) { return TC_ACT_UNSPEC; }

SEC("iter/tcp")
int churn_iter(struct bpf_iter__tcp *ctx) { return 0; }
"""
CHURN_PROGRAMS = {"churn_sock", "churn_in", "churn_out"}  # those with attach records

SOCKET_ONLY = r"""
SEC("socket")
int race_sock(struct __sk_buff *skb) { return 0; }
"""


def docker(*args: str, check: bool = True) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=check
    ).stdout.strip()


async def adocker(*args: str, check: bool = True) -> str:
    return await trio.to_thread.run_sync(lambda: docker(*args, check=check))


@attrs.define
class Containers:
    """Test containers named engine-test-<tag>-...; all removed at the end."""

    tag: str = attrs.Factory(lambda: uuid.uuid4().hex[:8])
    made: list[str] = attrs.Factory(list)

    def name(self, suffix: str) -> str:
        return f"engine-test-{self.tag}-{suffix}"

    @property
    def selection(self) -> list[str]:
        return [f"name=engine-test-{self.tag}-*"]

    async def run(self, suffix: str, *command: str, rm: bool = False) -> str:
        name = self.name(suffix)
        self.made.append(name)
        extra = ["--rm"] if rm else []
        await adocker("run", "-d", *extra, "--name", name, IMAGE, *command)
        return name

    def remove_all(self) -> None:
        if self.made:
            subprocess.run(["docker", "rm", "-f", *self.made], capture_output=True, check=False)


@pytest.fixture
def containers(docker_daemon: None) -> Iterator[Containers]:
    made = Containers()
    yield made
    made.remove_all()


@attrs.define
class Recorder:
    """Every record of an engine as JSON, with a way to wait for a condition on them."""

    records: list[dict[str, Any]] = attrs.Factory(list)
    _changed: trio.Event = attrs.Factory(trio.Event)

    async def follow(self, eng: Engine) -> None:
        async for record in eng.events():
            self.records.append(record.to_json())
            self._changed.set()
            self._changed = trio.Event()

    async def until(self, check: Callable[[], bool], seconds: float) -> None:
        with trio.fail_after(seconds):
            while not check():
                await self._changed.wait()

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["type"] == kind]

    def attached_programs(self, container: str) -> set[str]:
        return {r["program"] for r in self.of_type("attached") if r["container"] == container}


@attrs.frozen
class Running:
    eng: Engine
    recorder: Recorder


@pytest.fixture
def open_recorded() -> Callable[..., Any]:
    """``async with open_recorded(gadget, **options) as run``: the engine and its records."""

    def opener(gadget: Gadget | Path, **options: Any) -> Any:
        import contextlib

        @contextlib.asynccontextmanager
        async def running() -> AsyncIterator[Running]:
            recorder = Recorder()
            async with (
                engine.open_engine(gadget, iter_interval=3600, **options) as eng,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(recorder.follow, eng)
                yield Running(eng, recorder)
                eng.stop()

        return running()

    return opener


LIFECYCLE = ("attached", "detached", "attach_failed")


def lifecycles(records: list[dict[str, Any]], **match: Any) -> dict[str, list[str]]:
    """The attach record types of each program, in order, among records matching ``match``."""
    out: dict[str, list[str]] = {}
    for r in records:
        if r["type"] in LIFECYCLE and all(r.get(k) == v for k, v in match.items()):
            out.setdefault(r["program"], []).append(r["type"])
    return out


ENDINGS = (["attach_failed"], ["attached", "detached"])


def complete(lifecycle: dict[str, list[str]], programs: set[str]) -> bool:
    """Every program ended: attached then detached, or one attach_failed."""
    return set(lifecycle) == programs and all(types in ENDINGS for types in lifecycle.values())


def held_bpf_objects() -> Counter[str]:
    """BPF programs, links and maps this process holds fds on, and its fd count."""
    held: Counter[str] = Counter()
    for fd in os.listdir("/proc/self/fd"):
        held["fds"] += 1
        try:
            with open(f"/proc/self/fdinfo/{fd}") as f:
                info = f.read()
        except OSError:
            continue
        for key in ("prog_id", "link_id", "map_id"):
            if re.search(rf"^{key}:", info, re.MULTILINE):
                held[key] += 1
    return held


def loaded_programs(names: set[str]) -> list[str]:
    """Programs loaded in the kernel (by anyone) with one of these names."""
    out = subprocess.run(
        ["bpftool", "prog", "show"], capture_output=True, text=True, check=True
    ).stdout
    return [line for line in out.splitlines() if any(f" name {n} " in line for n in names)]


async def ping(container: str, dest: str, count: int) -> None:
    assert dest in (BRIDGE, "127.0.0.1") or dest.startswith("172.17.")
    await adocker(
        "exec", container, "ping", "-c", str(count), "-i", "0.2", "-W", "2", dest
    )  # fmt: skip


async def address(container: str) -> str:
    return await adocker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", container)


async def test_tc_and_socket_filter_count_exactly_per_container(
    containers: Containers, open_recorded: Callable[..., Any]
) -> None:
    gadget = Gadget.from_source(COUNTER, "icmp_counter.c")
    with trio.fail_after(90):
        async with open_recorded(gadget, select=containers.selection) as run:
            rec = run.recorder
            c1 = await containers.run("one", "sleep", "300")
            c2 = await containers.run("two", "sleep", "300")
            c3 = await containers.run("quiet", "sleep", "300")
            programs = {"count_socket", "count_tc_in", "count_tc_out"}
            await rec.until(
                lambda: all(rec.attached_programs(c) >= programs for c in (c1, c2, c3)), 30
            )
            await ping(c1, BRIDGE, 3)  # c1: 3 out, 3 in (socket and TC)
            await ping(c1, await address(c2), 2)  # c1: 2 out, 2 in; c2: 2 in, 2 out
            await ping(c2, "127.0.0.1", 2)  # c2's loopback: the socket sees each packet twice

            def counts() -> Counter[tuple[str | None, int, int]]:
                return Counter(
                    (
                        r["container"]["name"] if r["container"] else None,
                        r["data"]["seen_by"],
                        r["data"]["direction"],
                    )
                    for r in rec.of_type("event")
                )

            expected = {
                (c1, BY_SOCKET, OUT_OF): 5,
                (c1, BY_SOCKET, INTO): 5,
                (c1, BY_TC, OUT_OF): 5,
                (c1, BY_TC, INTO): 5,
                # 2 echo requests and 2 replies on lo, each seen going out and coming in.
                (c2, BY_SOCKET, OUT_OF): 2 + 4,
                (c2, BY_SOCKET, INTO): 2 + 4,
                (c2, BY_TC, OUT_OF): 2,
                (c2, BY_TC, INTO): 2,
            }
            await rec.until(lambda: sum(counts().values()) >= sum(expected.values()), 10)
            await trio.sleep(0.5)  # anything extra would show up now
        assert counts() == expected
        sockets = [r for r in rec.of_type("event") if r["data"]["seen_by"] == BY_SOCKET]
        assert all(r["data"]["netns_id"] for r in sockets)
        # Other containers started meanwhile (other tests) are attached speculatively, then
        # detached: count ours.
        ours = (c1, c2, c3)
        attached = [r for r in rec.of_type("attached") if r["container"] in ours]
        detached = [r for r in rec.of_type("detached") if r["container"] in ours]
        assert all(isinstance(r["latency"], float) and 0 < r["latency"] < 30 for r in attached)
        assert len(detached) == len(attached) == 9
    assert our_tc_filters() == []


async def test_iter_tcp_lists_a_port_in_its_container_only(
    containers: Containers, open_recorded: Callable[..., Any]
) -> None:
    with trio.fail_after(60):
        async with open_recorded(
            ROOT / "examples/listening_tcp.c", select=containers.selection
        ) as run:
            rec = run.recorder
            c1 = await containers.run("one", "nc", "-l", "-p", "7777")
            c2 = await containers.run("two", "nc", "-l", "-p", "7778")

            def ports(name: str) -> set[int]:
                return {
                    r["data"]["port"]
                    for r in rec.of_type("event")
                    if r["container"] is not None and r["container"]["name"] == name
                }

            # nc may start listening after the first automatic run: ask again until it shows.
            with trio.fail_after(20):
                while not (7777 in ports(c1) and 7778 in ports(c2)):
                    await run.eng.run_iterators()
                    await trio.sleep(0.1)
            assert ports(c1) == {7777}
            assert ports(c2) == {7778}
            events = rec.of_type("event")
            assert all(
                e["source"] == "listeners" and e["data"]["family"] in (2, 10) for e in events
            )


@pytest.mark.xfail(
    reason="passes in most full runs; in one of five here a container's programs never "
    "ended with attached+detached or attach_failed within 90 s (a missing lifecycle record "
    "under churn, like test_netns_deleted_mid_attach), under investigation",
    strict=False,
)
async def test_fifty_containers_churn_leaves_nothing(
    containers: Containers, open_recorded: Callable[..., Any]
) -> None:
    count = 50
    before_fds = held_bpf_objects()
    before_filters = our_tc_filters()
    gadget = Gadget.from_source(CHURN, "churn.c")
    names = [containers.name(f"c{i}") for i in range(count)]
    containers.made.extend(names)
    with trio.fail_after(180):
        async with open_recorded(gadget, select=containers.selection) as run:
            rec = run.recorder

            def settled(name: str) -> bool:
                return complete(lifecycles(rec.records, container=name), CHURN_PROGRAMS)

            with ThreadPoolExecutor(8) as pool:
                await trio.to_thread.run_sync(
                    lambda: list(
                        pool.map(
                            lambda n: docker("run", "-d", "--name", n, IMAGE, "sleep", "600"),
                            names,
                        )
                    )
                )
                await trio.to_thread.run_sync(
                    lambda: list(pool.map(lambda n: docker("rm", "-f", n), names))
                )
            await rec.until(lambda: all(settled(n) for n in names), 90)
            assert loaded_programs(CHURN_PROGRAMS)  # loaded while the engine runs
        failed = rec.of_type("attach_failed")
        assert len(failed) <= count // 5, failed  # a few may lose the race with docker rm
    assert our_tc_filters() == before_filters == []
    assert held_bpf_objects() == before_fds
    # The kernel frees a program after an RCU grace period once its last user is gone.
    with trio.fail_after(10):
        while loaded_programs(CHURN_PROGRAMS):  # noqa: ASYNC110 - nothing to wait on but the kernel
            await trio.sleep(0.1)


async def test_races_end_in_one_record_and_the_engine_goes_on(
    containers: Containers, open_recorded: Callable[..., Any]
) -> None:
    doomed = containers.name("doomed")
    killed: list[str] = []
    engines: list[Engine] = []

    async def kill_mid_attach(step: str, target: NetnsTarget) -> None:
        # The container dies after its netns was opened, before any program is attached.
        if step != "attach" or killed:
            return
        names = {c.name for c in target.containers}
        if target.speculative:
            # Attached before Docker said whose netns it is (docs/events.md): wait until it
            # says, so that the doomed container's netns is the one damaged.
            world = engines[0].world
            with trio.move_on_after(10):
                while world.is_pending(target.inode):  # noqa: ASYNC110 - a test seam, no event to wait on
                    await trio.sleep(0.02)
            known = world.container_for({"netns": target.inode})
            names = {known.name} if known is not None else set()
        if doomed in names:
            killed.append(doomed)
            await adocker("kill", doomed)

    before_fds = held_bpf_objects()
    gadget = Gadget.from_source(COUNTER, "icmp_counter.c")
    with trio.fail_after(90):
        async with open_recorded(gadget, select=containers.selection) as run:
            rec = run.recorder
            engines.append(run.eng)
            run.eng.per_netns.attach_step = kill_mid_attach
            await containers.run("doomed", "sleep", "300", rm=True)
            short = [await containers.run(f"short{i}", "true", rm=True) for i in range(3)]

            programs = {"count_socket", "count_tc_in", "count_tc_out"}
            await rec.until(
                lambda: complete(lifecycles(rec.records, container=doomed), programs), 30
            )
            assert killed == [doomed]
            # Containers that exit at once: seen or not, never half-attached.
            await trio.sleep(1)
            for name in short:
                lifecycle = lifecycles(rec.records, container=name)
                assert not lifecycle or complete(lifecycle, programs), lifecycle
            # The engine still attaches.
            alive = await containers.run("alive", "sleep", "300")
            await rec.until(lambda: rec.attached_programs(alive) >= programs, 30)
    assert our_tc_filters() == []
    assert held_bpf_objects() == before_fds


@pytest.mark.xfail(
    reason="passes alone and after most files; after tests/integration/test_first_packet.py "
    "the netns deleted at the 'open' step gets netns_added and netns_removed but no "
    "attach_failed (a missing record, under investigation; the same race passes in "
    "tests/faults/test_attach_races.py)",
    strict=False,
)
async def test_netns_deleted_mid_attach(root: None, open_recorded: Callable[..., Any]) -> None:
    tag = uuid.uuid4().hex[:6]
    early, late, kept = (f"engine-test-{tag}-{s}" for s in ("early", "late", "kept"))
    deleted: list[str] = []
    inodes: dict[str, int] = {}

    async def delete_mid_attach(step: str, target: NetnsTarget) -> None:
        name = os.path.basename(target.path)
        if (name, step) in ((early, "open"), (late, "attach")):
            deleted.append(name)
            inodes[name] = target.inode  # the test may not get to stat it before it goes
            await trio.run_process(["ip", "netns", "del", name])

    gadget = Gadget.from_source(SOCKET_ONLY, "race.c")
    try:
        with trio.fail_after(60):
            # No selection: every netns is traced, named ones too (a socket filter is
            # invisible to other tests' containers).
            async with open_recorded(gadget) as run:
                run.eng.per_netns.attach_step = delete_mid_attach  # before the netns exist
                rec = run.recorder
                since: dict[str, int] = {}

                def records(name: str) -> list[str]:
                    # Only records from after its creation: a deleted netns's inode is free
                    # for the next one, so the inode alone does not tell them apart.
                    if name not in inodes:
                        return []
                    later = rec.records[since[name] :]
                    return lifecycles(later, netns=inodes[name]).get("race_sock", [])

                async def add(name: str) -> None:
                    since[name] = len(rec.records)
                    await trio.run_process(["ip", "netns", "add", name])
                    if name == kept:
                        inodes[name] = os.stat(f"/run/netns/{name}").st_ino

                # One at a time, each settled before the next can take its inode.
                await add(early)
                await rec.until(lambda: records(early) == ["attach_failed"], 20)
                # Deleted while its task waits: cancelled before the socket is made (one
                # attach_failed) or just after (attached, detached): either way, complete.
                await add(late)
                await rec.until(lambda: records(late) in ENDINGS, 20)
                await add(kept)
                await rec.until(lambda: records(kept) == ["attached"], 20)
                assert sorted(deleted) == sorted([early, late])
                await trio.run_process(["ip", "netns", "del", kept])
                await rec.until(lambda: records(kept) == ["attached", "detached"], 20)
    finally:
        for name in (early, late, kept):
            await trio.run_process(["ip", "netns", "del", name], capture_stderr=True, check=False)
