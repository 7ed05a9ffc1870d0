"""First-packet capture with a selection: speculative attach and held events (docs/events.md).

A container runtime creates a container's netns before it reports the container, and a
container's entrypoint can send its first packet within milliseconds of that report. With a
selection, the engine attaches to a runtime's new netns at once and holds its events until
Docker says whose it is: released, named, if the container is selected; dropped if not.

Traffic stays on this machine: each container pings the docker bridge once as it starts.
"""

from __future__ import annotations

import functools
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs
import pytest
import trio

import engine
from engine.engine import Engine
from engine.gadget.model import Gadget
from tests.conftest import our_tc_filters

pytestmark = [pytest.mark.integration, pytest.mark.docker]

IMAGE = os.environ.get("ENGINE_TEST_IMAGE", "engine-test:latest")
BRIDGE = "172.17.0.1"  # the docker bridge: test traffic goes nowhere else
BY_SOCKET, BY_TC = 0, 1
SELECTED = 10
PROGRAMS = {"first_socket", "first_tc_out", "first_tc_in"}

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


def docker(*args: str, check: bool = True) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=check
    ).stdout.strip()


@attrs.define
class Recorder:
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

    def echoes(self) -> list[dict[str, Any]]:
        return [r for r in self.of_type("event") if r["source"] == "echoes"]

    def lifecycle(self, netns: int) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for r in self.records:
            if r["type"] in ("attached", "detached", "attach_failed") and r["netns"] == netns:
                out.setdefault(r["program"], []).append(r["type"])
        return out


@pytest.fixture
def tag(docker_daemon: None) -> Iterator[str]:
    tag = uuid.uuid4().hex[:8]
    yield tag
    names = docker("ps", "-aq", "--filter", f"name=engine-test-{tag}-", check=False).split()
    if names:
        docker("rm", "-f", *names, check=False)


def start_all(names: list[str]) -> None:
    """Start every container at once; each pings the bridge once as it starts."""
    command = f"ping -c 1 -W 2 {BRIDGE} >/dev/null; exec sleep 300"
    with ThreadPoolExecutor(len(names)) as pool:
        list(
            pool.map(lambda n: docker("run", "-d", "--name", n, IMAGE, "sh", "-c", command), names)
        )


def inspect(name: str) -> tuple[str, int]:
    """The container's address and netns inode."""
    shown = docker("inspect", "-f", "{{.NetworkSettings.IPAddress}} {{.State.Pid}}", name)
    address, pid = shown.split()
    return address, os.stat(f"/proc/{pid}/ns/net").st_ino


async def test_first_ping_of_every_selected_container_is_seen(tag: str) -> None:
    selected = [f"engine-test-{tag}-sel-{i}" for i in range(SELECTED)]
    other = f"engine-test-{tag}-other"
    gadget = Gadget.from_source(GADGET, "first_packet.c")
    rec = Recorder()
    with trio.fail_after(120):
        async with (
            engine.open_engine(
                gadget, select=[f"name=engine-test-{tag}-sel-*"], iter_interval=3600
            ) as eng,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(rec.follow, eng)
            await trio.to_thread.run_sync(start_all, [*selected, other])
            seen = {n: await trio.to_thread.run_sync(inspect, n) for n in [*selected, other]}
            addresses = {seen[n][0]: n for n in selected}

            def first_pings() -> set[tuple[str, int]]:
                return {(e["data"]["saddr"], e["data"]["seen_by"]) for e in rec.echoes()}

            wanted = {(a, by) for a in addresses for by in (BY_SOCKET, BY_TC)}
            try:
                await rec.until(lambda: wanted <= first_pings(), 30)
            except trio.TooSlowError:
                missing = sorted(wanted - first_pings())
                pytest.fail(f"first pings not seen (address, 0 socket / 1 TC): {missing}")
            # Every echo names its container; the unselected container's never arrive.
            other_address, other_netns = seen[other]
            for echo in rec.echoes():
                saddr = echo["data"]["saddr"]
                assert saddr != other_address, echo
                if saddr in addresses:
                    assert echo["container"] is not None, echo
                    assert echo["container"]["name"] == addresses[saddr], echo
            # The unselected container was attached (at once, speculatively), then detached.
            both = ["attached", "detached"]
            await rec.until(lambda: rec.lifecycle(other_netns) == {p: both for p in PROGRAMS}, 15)
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
            eng.stop()
    assert our_tc_filters() == []


QUICK_STARTS = 10


def start_one_by_one(names: list[str]) -> None:
    """Start the containers one after the other, each as soon as the previous one is up."""
    command = f"ping -c 1 -W 2 {BRIDGE} >/dev/null; exec sleep 300"
    for name in names:
        docker("run", "-d", "--name", name, IMAGE, "sh", "-c", command)


async def test_first_ping_seen_by_tc_across_quick_starts(tag: str) -> None:
    """Classifiers are on the host-side veth before the container's end moves into its netns
    (engine/preattach.py): TC sees every container's first packet, as the socket filter does,
    and each netns still gets one `attached` per program and interface."""
    names = [f"engine-test-{tag}-quick-{i}" for i in range(QUICK_STARTS)]
    gadget = Gadget.from_source(GADGET, "first_packet.c")
    rec = Recorder()
    with trio.fail_after(120):
        async with (
            engine.open_engine(
                gadget, select=[f"name=engine-test-{tag}-quick-*"], iter_interval=3600
            ) as eng,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(rec.follow, eng)
            await trio.to_thread.run_sync(start_one_by_one, names)
            seen = {n: await trio.to_thread.run_sync(inspect, n) for n in names}
            addresses = {seen[n][0]: n for n in names}

            def first_pings() -> set[tuple[str, int]]:
                return {(e["data"]["saddr"], e["data"]["seen_by"]) for e in rec.echoes()}

            wanted = {(a, by) for a in addresses for by in (BY_SOCKET, BY_TC)}
            try:
                await rec.until(lambda: wanted <= first_pings(), 30)
            except trio.TooSlowError:
                missing = sorted(wanted - first_pings())
                pytest.fail(f"first pings not seen (address, 0 socket / 1 TC): {missing}")
            for echo in rec.echoes():
                if echo["data"]["saddr"] in addresses:
                    assert echo["container"]["name"] == addresses[echo["data"]["saddr"]], echo
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
            eng.stop()
    assert our_tc_filters() == []


def has_two_filters(interface: str) -> bool:
    return len(filters_on(interface)) == 2


def filters_on(ifname: str) -> list[str]:
    out = subprocess.run(
        ["sh", "-c", f"tc filter show dev {ifname} ingress; tc filter show dev {ifname} egress"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return [line for line in out.splitlines() if f"engine_{os.getpid()}." in line]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], capture_output=True, text=True, check=True)


async def until_true(check: Callable[[], bool], seconds: float) -> bool:
    """Whether ``check`` (a look at tc, which sends no change notice) holds within ``seconds``."""
    with trio.move_on_after(seconds):
        while not await trio.to_thread.run_sync(check):  # noqa: ASYNC110 - nothing to wait on
            await trio.sleep(0.05)
        return True
    return False


@pytest.fixture
def veths(tag: str) -> Iterator[tuple[str, str]]:
    """Names for two veth pairs made by the test (deleted after it): not a container's."""
    names = (f"etp{tag[:6]}d", f"etp{tag[:6]}u")
    yield names
    for name in names:
        subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)


async def test_preattached_veth_nobody_claims_leaves_no_filter(
    tag: str, veths: tuple[str, str]
) -> None:
    """A veth that becomes a bridge port with its peer still in the host netns gets the
    classifiers at once; they are removed when the veth is deleted, when no netns takes it in
    time, and when its container turns out to be unselected or is removed."""
    gadget = Gadget.from_source(GADGET, "first_packet.c")
    deleted, unclaimed = veths
    other = f"engine-test-{tag}-other"
    removed = f"engine-test-{tag}-sel-removed"
    rec = Recorder()
    with trio.fail_after(90):
        async with (
            engine.open_engine(
                gadget, select=[f"name=engine-test-{tag}-sel-*"], iter_interval=3600
            ) as eng,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(rec.follow, eng)
            assert eng.per_netns.preattach is not None
            eng.per_netns.preattach.claim_wait = 2.0
            for name in (deleted, unclaimed):
                ip("link", "add", name, "type", "veth", "peer", "name", f"{name}p")
                ip("link", "set", name, "master", "docker0")
            # Pre-attached: both classifier programs, on the bridge port only.
            for name in (deleted, unclaimed):
                assert await until_true(functools.partial(has_two_filters, name), 5), name
                assert filters_on(f"{name}p") == []
            ip("link", "del", deleted)
            # Nobody claims the other one: removed once the wait is over, the veth still there.
            assert await until_true(lambda: filters_on(unclaimed) == [], 10)
            await trio.to_thread.run_sync(start_all, [other, removed])
            _, other_netns = await trio.to_thread.run_sync(inspect, other)
            both = ["attached", "detached"]
            await rec.until(lambda: rec.lifecycle(other_netns) == {p: both for p in PROGRAMS}, 15)
            await trio.to_thread.run_sync(lambda: docker("rm", "-f", removed))
            # Another engineer's container started meanwhile is pre-attached for claim_wait.
            assert await until_true(lambda: our_tc_filters() == [], 10), our_tc_filters()
            eng.stop()
    assert our_tc_filters() == []
