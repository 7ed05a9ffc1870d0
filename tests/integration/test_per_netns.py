"""Per-netns programs through the whole engine, with real containers and real traffic.

Traffic stays on this machine: container to container, container to the docker bridge and
loopback inside a container, ICMP only (counted exactly; ARP and IPv6 chatter are ignored by
the gadgets). Each test selects its own containers by name, so that containers of other tests
running at the same time are neither traced nor counted.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import trio

from engine.engine import Engine
from engine.gadget.model import Gadget
from engine.world.state import NetnsTarget
from tests.support.commands import adocker, docker, run
from tests.support.constants import BRIDGE, EXAMPLES
from tests.support.docker import Containers
from tests.support.gadget_c import IS_ICMP
from tests.support.kernel_state import bpf_programs
from tests.support.recorder import ENDINGS, complete, lifecycles, recorded

pytestmark = [pytest.mark.integration, pytest.mark.docker]

INTO, OUT_OF = 0, 1  # directions, seen from the container
BY_SOCKET, BY_TC = 0, 1
COUNTER_PROGRAMS = {"count_socket", "count_tc_in", "count_tc_out"}

COUNTER = (
    IS_ICMP
    + r"""
#define PACKET_OUTGOING 4

struct icmp_t { u64 netns_id; u32 ifindex; u32 seen_by; u32 direction; };
BPF_RINGBUF_OUTPUT(icmp, 256);

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
)

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


def loaded_programs(names: set[str]) -> list[str]:
    """Programs loaded in the kernel (by anyone) with one of these names."""
    return [name for name in bpf_programs().values() if name in names]


async def ping(containers: Containers, container: str, dest: str, count: int) -> None:
    assert dest in (BRIDGE, "127.0.0.1") or dest.startswith("172.17.")
    await containers.exec(container, "ping", "-c", str(count), "-i", "0.2", "-W", "2", dest)


async def test_tc_and_socket_filter_count_exactly_per_container(containers: Containers) -> None:
    gadget = Gadget.from_source(COUNTER, "icmp_counter.c")
    with trio.fail_after(90):
        async with recorded(gadget, select=containers.selection, iter_interval=3600) as (_, rec):
            ours = [await containers.run(role) for role in ("one", "two", "quiet", "marker")]
            c1, c2, _, marker = ours
            await rec.until(
                lambda: all(rec.attached_programs(container=c) == COUNTER_PROGRAMS for c in ours),
                30,
                "every container attached",
            )
            await ping(containers, c1, BRIDGE, 3)  # c1: 3 out, 3 in (socket and TC)
            await ping(containers, c1, await containers.address(c2), 2)  # c1: 2 out, 2 in;
            # c2: 2 in, 2 out
            await ping(containers, c2, "127.0.0.1", 2)  # c2's lo: the socket sees each twice
            # The last packets: the ring buffer keeps the kernel's order, so once the marker's
            # reply is seen by both programs, every packet before it has been counted.
            await ping(containers, marker, BRIDGE, 1)

            def counts() -> Counter[tuple[str | None, int, int]]:
                return Counter(
                    (
                        r["container"]["name"] if r["container"] else None,
                        r["data"]["seen_by"],
                        r["data"]["direction"],
                    )
                    for r in rec.events()
                )

            await rec.until(
                lambda: counts()[marker, BY_SOCKET, INTO] and counts()[marker, BY_TC, INTO],
                10,
                "the marker's reply",
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
    assert {k: n for k, n in counts().items() if k[0] != marker} == expected
    sockets = [r for r in rec.events() if r["data"]["seen_by"] == BY_SOCKET]
    assert all(r["data"]["netns_id"] for r in sockets)
    # Other containers started meanwhile (other tests) are attached speculatively, then
    # detached: count ours.
    attached = [r for r in rec.of_type("attached") if r["container"] in ours]
    detached = [r for r in rec.of_type("detached") if r["container"] in ours]
    assert all(isinstance(r["latency"], float) and 0 < r["latency"] < 30 for r in attached)
    assert len(detached) == len(attached) == 3 * len(ours)


async def test_iter_tcp_lists_a_port_in_its_container_only(containers: Containers) -> None:
    with trio.fail_after(60):
        async with recorded(
            EXAMPLES / "listening_tcp.c", select=containers.selection, iter_interval=3600
        ) as (eng, rec):
            c1 = await containers.run("one", "nc", "-l", "-p", "7777")
            c2 = await containers.run("two", "nc", "-l", "-p", "7778")

            def ports(name: str) -> set[int]:
                return {
                    r["data"]["port"]
                    for r in rec.events()
                    if r["container"] is not None and r["container"]["name"] == name
                }

            # nc may start listening after the first automatic run: ask again until it shows.
            with trio.fail_after(20):
                while not (7777 in ports(c1) and 7778 in ports(c2)):
                    await eng.run_iterators()
                    await trio.sleep(0.1)
    assert ports(c1) == {7777}
    assert ports(c2) == {7778}
    assert all(e["source"] == "listeners" and e["data"]["family"] in (2, 10) for e in rec.events())


async def test_fifty_containers_churn_leaves_nothing(containers: Containers) -> None:
    count = 50
    gadget = Gadget.from_source(CHURN, "churn.c")
    roles = [f"c{i}" for i in range(count)]
    names = [containers.name(role) for role in roles]
    with trio.fail_after(180):
        async with recorded(gadget, select=containers.selection, iter_interval=3600) as (_, rec):

            def settled(name: str) -> bool:
                return complete(rec.lifecycles(container=name), CHURN_PROGRAMS)

            with ThreadPoolExecutor(8) as pool:
                await trio.to_thread.run_sync(lambda: list(pool.map(containers.start, roles)))
                await trio.to_thread.run_sync(
                    lambda: list(pool.map(lambda n: docker("rm", "-f", n), names))
                )

            def unsettled() -> str:
                stories = {n: rec.lifecycles(container=n) for n in names if not settled(n)}
                return f"every story ended (not: {stories})"

            await rec.until(lambda: all(settled(n) for n in names), 90, unsettled)
            assert loaded_programs(CHURN_PROGRAMS)  # loaded while the engine runs
    failed = rec.of_type("attach_failed")
    assert len(failed) <= count // 5, failed  # a few may lose the race with docker rm


async def test_races_end_in_one_record_and_the_engine_goes_on(containers: Containers) -> None:
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

    gadget = Gadget.from_source(COUNTER, "icmp_counter.c")
    with trio.fail_after(90):
        async with recorded(gadget, select=containers.selection, iter_interval=3600) as (eng, rec):
            engines.append(eng)
            eng.per_netns.attach_step = kill_mid_attach  # the containers are started after this
            await containers.run("doomed", options=["--rm"])
            short = [await containers.run(f"short{i}", "true", options=["--rm"]) for i in range(3)]
            await rec.until(
                lambda: complete(rec.lifecycles(container=doomed), COUNTER_PROGRAMS),
                30,
                "the doomed container's story",
            )
            assert killed == [doomed]
            # The engine still attaches.
            alive = await containers.run("alive")
            await rec.until(
                lambda: rec.attached_programs(container=alive) == COUNTER_PROGRAMS,
                30,
                "alive attached",
            )

            # Containers that exit at once: seen or not, never half-attached.
            def settled(name: str) -> bool:
                lifecycle = rec.lifecycles(container=name)
                return not lifecycle or complete(lifecycle, COUNTER_PROGRAMS)

            await rec.until(
                lambda: all(settled(name) for name in short),
                30,
                lambda: f"short stories: { {n: rec.lifecycles(container=n) for n in short} }",
            )


async def test_netns_deleted_mid_attach(root: None) -> None:
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
            async with recorded(gadget, iter_interval=3600) as (eng, rec):
                eng.per_netns.attach_step = delete_mid_attach  # before the netns exist
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
                await rec.until(lambda: records(early) == ["attach_failed"], 20, early)
                # Deleted while its task waits: cancelled before the socket is made (one
                # attach_failed) or just after (attached, detached): either way, complete.
                await add(late)
                await rec.until(lambda: records(late) in ENDINGS, 20, late)
                await add(kept)
                await rec.until(lambda: records(kept) == ["attached"], 20, kept)
                assert sorted(deleted) == sorted([early, late])
                await trio.run_process(["ip", "netns", "del", kept])
                await rec.until(lambda: records(kept) == ["attached", "detached"], 20, kept)
    finally:
        for name in (early, late, kept):
            run("ip", "netns", "del", name, check=False)
