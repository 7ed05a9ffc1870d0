"""First-packet capture with a selection: speculative attach and held events (docs/events.md).

A container runtime creates a container's netns before it reports the container, and a
container's entrypoint can send its first packet within milliseconds of that report. With a
selection, the engine attaches to a runtime's new netns at once and holds its events until
Docker says whose it is: released, named, if the container is selected; dropped if not.

Traffic stays on this machine: each container pings the docker bridge once as it starts.
"""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager

import pytest
import trio
import trio.testing

import engine
from engine.engine import Engine
from engine.gadget.model import Gadget
from tests.support.commands import run
from tests.support.constants import BRIDGE
from tests.support.docker import Containers
from tests.support.kernel_state import our_tc_filters
from tests.support.recorder import Record, Recorder, recording

pytestmark = [pytest.mark.integration, pytest.mark.docker]

BY_SOCKET, BY_TC = 0, 1
SELECTED = 10
PROGRAMS = {"first_socket", "first_tc_out", "first_tc_in"}
PING_ONCE = ("sh", "-c", f"ping -c 1 -W 2 {BRIDGE} >/dev/null; exec sleep 300")
BOTH = ["attached", "detached"]

# Echo requests only; each record names its netns as gadgets should (socket: netns_id; TC:
# the host-side ifindex), which is what the engine holds records by.
GADGET = r"""
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>

struct echo_t { u64 netns_id; u32 saddr; u32 seen_by; u32 ifindex; };
BPF_RINGBUF_OUTPUT(echoes, 64);

static __always_inline void note(struct __sk_buff *skb, u32 seen_by)
{
    u8 vihl = 0, proto = 0, type = 0;
    u32 saddr = 0;
    if (skb->protocol != htons(ETH_P_IP))
        return;
    if (bpf_skb_load_bytes(skb, ETH_HLEN, &vihl, 1) ||
        bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct iphdr, protocol), &proto, 1) ||
        proto != IPPROTO_ICMP ||
        bpf_skb_load_bytes(skb, ETH_HLEN + (vihl & 0xf) * 4, &type, 1) || type != 8 ||
        bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct iphdr, saddr), &saddr, 4))
        return;
    struct echo_t e = {.saddr = saddr, .seen_by = seen_by};
    if (seen_by == 0)
        e.netns_id = engine_skb_netns_id(skb);
    else
        e.ifindex = skb->ifindex;
    echoes.ringbuf_output(&e, sizeof(e), 0);
}

SEC("socket")
int first_socket(struct __sk_buff *skb) { note(skb, 0); return 0; }

SEC("classifier/egress/first_tc_out")
int first_tc_out(struct __sk_buff *skb) { note(skb, 1); return TC_ACT_UNSPEC; }

SEC("classifier/ingress/first_tc_in")
int first_tc_in(struct __sk_buff *skb) { return TC_ACT_UNSPEC; }
"""


def selecting(containers: Containers, roles: str) -> AbstractAsyncContextManager[Engine]:
    """The engine with GADGET, selecting this test's containers whose roles match ``roles``."""
    return engine.open_engine(
        Gadget.from_source(GADGET, "first_packet.c"),
        select=[f"name={containers.name(roles)}"],
        iter_interval=3600,
    )


def echoes(rec: Recorder) -> list[Record]:
    return rec.events("echoes")


def lifecycle(rec: Recorder, netns: int) -> dict[str, list[str]]:
    return rec.lifecycles(netns=netns)


def start_all(containers: Containers, roles: list[str]) -> list[str]:
    """Start every container at once; each pings the bridge once as it starts."""
    with ThreadPoolExecutor(len(roles)) as pool:
        return list(pool.map(lambda role: containers.start(role, *PING_ONCE), roles))


async def addresses_and_netns(
    containers: Containers, names: list[str]
) -> dict[str, tuple[str, int]]:
    """Each container's address and netns inode."""
    return {n: (await containers.address(n), await containers.netns(n)) for n in names}


async def first_pings_seen(rec: Recorder, addresses: dict[str, str]) -> None:
    """Until the first ping of every container (by address) was seen by both programs."""

    def first_pings() -> set[tuple[str, int]]:
        return {(e["data"]["saddr"], e["data"]["seen_by"]) for e in echoes(rec)}

    wanted = {(a, by) for a in addresses for by in (BY_SOCKET, BY_TC)}
    await rec.until(
        lambda: wanted <= first_pings(),
        30,
        lambda: f"first pings (address, 0 socket / 1 TC): {sorted(wanted - first_pings())}",
    )
    for echo in echoes(rec):
        saddr = echo["data"]["saddr"]
        if saddr in addresses:
            assert echo["container"] is not None, echo
            assert echo["container"]["name"] == addresses[saddr], echo


async def test_first_ping_of_every_selected_container_is_seen(containers: Containers) -> None:
    with trio.fail_after(120):
        async with selecting(containers, "sel-*") as eng, recording(eng) as rec:
            roles = [f"sel-{i}" for i in range(SELECTED)] + ["other"]
            *selected, other = await trio.to_thread.run_sync(start_all, containers, roles)
            seen = await addresses_and_netns(containers, [*selected, other])
            await first_pings_seen(rec, {seen[n][0]: n for n in selected})
            # The unselected container's echoes never arrive.
            other_address, other_netns = seen[other]
            assert not [e for e in echoes(rec) if e["data"]["saddr"] == other_address]
            # The unselected container was attached (at once, speculatively), then detached.
            await rec.until(
                lambda: lifecycle(rec, other_netns) == {p: BOTH for p in PROGRAMS},
                15,
                lambda: f"{other} attached, then detached: {lifecycle(rec, other_netns)}",
            )
            for r in rec.records:
                if r["type"] in ("attached", "detached") and r["netns"] == other_netns:
                    assert r["speculative"] is True, r
                    assert r["container"] == other, r
            # The selected ones' attach records name them (held until identified).
            for name in selected:
                netns = seen[name][1]
                attached = [r for r in rec.of_type("attached") if r["netns"] == netns]
                assert {r["program"] for r in attached} == PROGRAMS
                assert all(r["container"] == name for r in attached), attached
            assert not [r for r in rec.of_type("lost") if r["where"] == "pending"]


async def test_first_pings_named_while_the_shared_thread_pool_is_full(
    containers: Containers,
) -> None:
    """The engine's blocking work has worker threads of its own (runtime sources, a gadget's
    calls): an application that keeps trio's shared thread limiter full, with more calls
    waiting (the churn benchmark's `docker run`s did), delays neither the naming of a new
    netns nor the attaches behind it, so the first pings are still seen and named."""
    shared = trio.to_thread.current_default_thread_limiter()
    ours = trio.CapacityLimiter(1)  # for the test's own blocking call meanwhile
    release = threading.Event()
    with trio.fail_after(120):
        async with (
            selecting(containers, "busy-*") as eng,
            recording(eng) as rec,
            trio.open_nursery() as busy,
        ):
            try:
                for _ in range(int(shared.total_tokens) + 5):
                    busy.start_soon(trio.to_thread.run_sync, release.wait, None)
                await trio.testing.wait_all_tasks_blocked()
                assert shared.statistics().tasks_waiting >= 5
                names = await trio.to_thread.run_sync(
                    start_all,
                    containers,
                    ["busy-0", "busy-1", "busy-2"],
                    limiter=ours,
                )

                def named_pings() -> set[tuple[str, int]]:
                    return {
                        (e["container"]["name"], e["data"]["seen_by"])
                        for e in echoes(rec)
                        if e["container"] is not None
                    }

                wanted = {(n, by) for n in names for by in (BY_SOCKET, BY_TC)}
                await rec.until(
                    lambda: wanted <= named_pings(),
                    30,
                    lambda: f"first pings not seen named: {sorted(wanted - named_pings())}",
                )
            finally:
                release.set()


QUICK_STARTS = 10


async def test_first_ping_seen_by_tc_across_quick_starts(containers: Containers) -> None:
    """Classifiers are on the host-side veth before the container's end moves into its netns
    (engine/attach/preattach.py): TC sees every container's first packet, as the socket
    filter does, and each netns still gets one `attached` per program and interface."""
    with trio.fail_after(120):
        async with selecting(containers, "quick-*") as eng, recording(eng) as rec:
            # One after the other, each as soon as the previous one is up.
            names = [await containers.run(f"quick-{i}", *PING_ONCE) for i in range(QUICK_STARTS)]
            seen = await addresses_and_netns(containers, names)
            await first_pings_seen(rec, {seen[n][0]: n for n in names})
            for name in names:
                # By name too: a netns that ended earlier in the run (another container's,
                # also traced speculatively) may have had the same inode.
                netns = seen[name][1]
                attached = [
                    (r["program"], r["interface"] or "")
                    for r in rec.of_type("attached")
                    if r["netns"] == netns and r["container"] == name
                ]
                assert len(attached) == len(set(attached)) == len(PROGRAMS), attached


def has_two_filters(interface: str) -> bool:
    return len(our_tc_filters(interface)) == 2


async def until_true(check: Callable[[], bool], seconds: float) -> bool:
    """Whether ``check`` (a look at tc, which sends no change notice) holds within ``seconds``."""
    with trio.move_on_after(seconds):
        while not await trio.to_thread.run_sync(check):  # noqa: ASYNC110 - nothing to wait on
            await trio.sleep(0.05)
        return True
    return False


@pytest.fixture
def veths(containers: Containers) -> Iterator[tuple[str, str]]:
    """Names for two veth pairs made by the test (deleted after it): not a container's."""
    tag = uuid.uuid4().hex[:6]
    names = (f"etp{tag}d", f"etp{tag}u")
    yield names
    for name in names:
        run("ip", "link", "del", name, check=False)


async def test_preattached_veth_nobody_claims_leaves_no_filter(
    containers: Containers, veths: tuple[str, str]
) -> None:
    """A veth that becomes a bridge port with its peer still in the host netns gets the
    classifiers at once; they are removed when the veth is deleted, when no netns takes it in
    time, and when its container turns out to be unselected or is removed."""
    deleted, unclaimed = veths
    with trio.fail_after(90):
        async with selecting(containers, "sel-*") as eng, recording(eng) as rec:
            assert eng.per_netns.preattach is not None
            eng.per_netns.preattach.claim_wait = 2.0
            for name in (deleted, unclaimed):
                run("ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}p")
                run("ip", "link", "set", name, "master", "docker0")
            # Pre-attached: both classifier programs, on the bridge port only.
            for name in (deleted, unclaimed):
                assert await until_true(functools.partial(has_two_filters, name), 5), name
                assert our_tc_filters(f"{name}p") == []
            run("ip", "link", "del", deleted)
            # Nobody claims the other one: removed once the wait is over, the veth still there.
            assert await until_true(lambda: our_tc_filters(unclaimed) == [], 10)
            other, removed = await trio.to_thread.run_sync(
                start_all, containers, ["other", "sel-removed"]
            )
            other_netns = await containers.netns(other)
            await rec.until(
                lambda: lifecycle(rec, other_netns) == {p: BOTH for p in PROGRAMS},
                15,
                lambda: f"{other} attached, then detached: {lifecycle(rec, other_netns)}",
            )
            await containers.remove(removed)
            # Another engineer's container started meanwhile is pre-attached for claim_wait.
            assert await until_true(lambda: our_tc_filters() == [], 10), our_tc_filters()


@pytest.fixture
def named_netns() -> Iterator[tuple[str, str]]:
    """Names for two netns the test makes as ``ip netns add`` does, removed after it: one named
    as containerd's CNI names a pod's (a container's, once the runtime says whose), one not."""
    tag = uuid.uuid4().hex[:6]
    names = (f"cni-engtest-{tag}", f"engtest-{tag}")
    yield names
    for name in names:
        run("ip", "netns", "del", name, check=False)


async def test_veth_made_inside_its_netns_is_preattached_unless_untraced(
    containers: Containers, veths: tuple[str, str], named_netns: tuple[str, str]
) -> None:
    """CNI plugins make the pair inside the pod's netns, the host end on a bridge: the
    classifiers go on the host end as soon as the link message that says so is read
    (engine/attach/preattach.py), and go with the veth. A veth into a netns the engine knows
    and does not trace (a container that is not selected, a netns no runtime made) gets none."""
    fresh, extra = veths
    pod, plain = named_netns
    run("ip", "netns", "add", plain)  # known from the start: never a container's
    with trio.fail_after(90):
        async with selecting(containers, "sel-*") as eng:
            (other,) = await trio.to_thread.run_sync(start_all, containers, ["other"])
            pid, other_netns = await containers.pid(other), await containers.netns(other)
            # Known (its netns and whose it is) and not selected.
            with trio.fail_after(15):
                while eng.world.may_trace(other_netns):  # noqa: ASYNC110 - nothing to wait on
                    await trio.sleep(0.05)
            # Made now: a pod's netns is traced while the runtime has not said whose it is.
            run("ip", "netns", "add", pod)
            untraced = f"{extra}x"
            for name, into in ((fresh, pod), (extra, str(pid)), (untraced, plain)):
                run(
                    "ip", "link", "add", name, "type", "veth", "peer", "name", "eth9", "netns", into
                )
                run("ip", "link", "set", name, "master", "docker0")
            assert await until_true(functools.partial(has_two_filters, fresh), 5)
            assert our_tc_filters(extra, untraced) == []
            run("ip", "link", "del", fresh)
            assert await until_true(lambda: our_tc_filters() == [], 10), our_tc_filters()
