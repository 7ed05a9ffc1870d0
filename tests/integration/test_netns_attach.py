"""Per-netns attachers with real containers and real traffic that stays on this machine.

Traffic: ICMP between a test container and the docker bridge address or another test container,
nothing else. Counters count ICMP only, so ARP and IPv6 chatter do not disturb exact figures.
"""

from __future__ import annotations

import signal
import struct
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio

from engine.attach import (
    Direction,
    attach_classifier,
    attach_socket_filter,
    current_owner,
    find_host_peers,
    owner_alive,
    remove_orphan_filters,
    run_iter_in_netns,
)
from engine.attach.iterator import IterLink
from engine.attach.tc import HostPeer
from engine.errors import AttachError
from engine.netns import NetnsHandle
from tests.support.commands import arun
from tests.support.constants import BRIDGE
from tests.support.docker import Containers
from tests.support.kernel_state import tc_filters

pytestmark = [pytest.mark.integration, pytest.mark.docker]

COUNTERS = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/pkt_cls.h>
BPF_ARRAY(counts, u64, 4);

static inline int is_icmp(struct __sk_buff *skb) {
    u8 proto = 0;
    if (skb->protocol != htons(ETH_P_IP))
        return 0;
    bpf_skb_load_bytes(skb, ETH_HLEN + offsetof(struct iphdr, protocol), &proto, 1);
    return proto == 1;
}
static inline void bump(int key) {
    u64 *v = counts.lookup(&key);
    if (v)
        __sync_fetch_and_add(v, 1);
}
int tc_ingress(struct __sk_buff *skb) { if (is_icmp(skb)) bump(0); return TC_ACT_UNSPEC; }
int tc_egress(struct __sk_buff *skb) { if (is_icmp(skb)) bump(1); return TC_ACT_UNSPEC; }
int sock_count(struct __sk_buff *skb) { if (is_icmp(skb)) bump(2); return 0; }
"""

ITER_TCP = r"""
#include <linux/bpf.h>
#include <net/sock.h>
struct bpf_iter__tcp {
    __bpf_md_ptr(struct bpf_iter_meta *, meta);
    __bpf_md_ptr(struct sock_common *, sk_common);
    uid_t uid __aligned(8);
};
int bpf_iter__tcp(struct bpf_iter__tcp *ctx) {
    struct sock_common *skc = ctx->sk_common;
    if (!skc)
        return 0;
    if (skc->skc_state == 10) {  /* TCP_LISTEN */
        u16 port = skc->skc_num;
        bpf_seq_write(ctx->meta->seq, &port, sizeof(port));
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def counters() -> Iterator[Any]:
    """The counting programs, compiled and loaded once (load_func fds are cached by bcc)."""
    from bcc import BPF

    bpf = BPF(text=COUNTERS.encode())
    bpf.load_func(b"tc_ingress", BPF.SCHED_CLS)
    bpf.load_func(b"tc_egress", BPF.SCHED_CLS)
    bpf.load_func(b"sock_count", BPF.SOCKET_FILTER)
    yield bpf
    bpf.cleanup()


@pytest.fixture(scope="module")
def iter_tcp() -> Iterator[Any]:
    from bcc import BPF

    bpf = BPF(text=ITER_TCP.encode())
    bpf.load_func(b"bpf_iter__tcp", BPF.TRACING)
    yield bpf
    bpf.cleanup()


def fd_of(bpf: Any, name: str) -> int:
    fd: int = bpf.funcs[name.encode()].fd
    return fd


@attrs.frozen
class Container:
    name: str
    pid: int
    ip: str


async def start(containers: Containers, role: str, *options: str) -> Container:
    name = await containers.run(role, options=options)
    return Container(name, await containers.pid(name), await containers.address(name))


@pytest.fixture
async def pair(containers: Containers) -> list[Container]:
    with trio.fail_after(30):
        return [await start(containers, "one"), await start(containers, "two")]


@asynccontextmanager
async def first_peer(
    pair: list[Container], program: str
) -> AsyncIterator[tuple[NetnsHandle, HostPeer]]:
    """The first container's netns, and the host side of its veth for ``program``."""
    async with NetnsHandle.from_pid(pair[0].pid) as handle:
        (peer,) = await find_host_peers(handle, program)
        yield handle, peer


async def bpf_filters(dev: str) -> list[str]:
    """Our filters (and other bpf ones) on `dev`: one line per filter."""
    lines = await trio.to_thread.run_sync(tc_filters, dev)
    return [line for line in lines if " bpf " in line and "handle" in line]


async def others(dev: str) -> list[str]:
    """The other tool's filters on `dev` (u32: this kernel has no matchall)."""
    return [line for line in await trio.to_thread.run_sync(tc_filters, dev) if " u32 " in line]


def reset(bpf: Any) -> None:
    for key in range(4):
        bpf[b"counts"][key] = bpf[b"counts"].Leaf(0)


async def ping(c: Container, dest: str, count: int) -> None:
    assert dest == BRIDGE or dest.startswith("172.17.")
    await arun("docker", "exec", c.name, "ping", "-c", str(count), "-i", "0.2", "-W", "2", dest)


async def test_tc_counts_exactly_what_enters_and_leaves(
    counters: Any, pair: list[Container]
) -> None:
    ingress = fd_of(counters, "tc_ingress")
    egress = fd_of(counters, "tc_egress")
    reset(counters)
    c1, c2 = pair
    with trio.fail_after(30):
        async with NetnsHandle.from_pid(c1.pid) as handle:
            (peer,) = await find_host_peers(handle, "tc_ingress")
            async with (
                attach_classifier(ingress, "tc_ingress", peer, Direction.INGRESS),
                attach_classifier(egress, "tc_egress", peer, Direction.EGRESS),
            ):
                assert len(await bpf_filters(peer.host_ifname)) == 2
                await ping(c1, BRIDGE, 5)  # 5 requests leave c1, 5 replies enter it
                await ping(c2, c1.ip, 3)  # 3 requests enter c1, 3 replies leave it
            assert await bpf_filters(peer.host_ifname) == []
    assert counters[b"counts"][0].value == 5 + 3
    assert counters[b"counts"][1].value == 5 + 3
    await ping(c1, BRIDGE, 1)
    assert counters[b"counts"][0].value == 8  # detached: counts no more


async def test_socket_filter_counts_its_netns_only(counters: Any, pair: list[Container]) -> None:
    prog = fd_of(counters, "sock_count")
    reset(counters)
    c1, c2 = pair
    with trio.fail_after(30):
        async with NetnsHandle.from_pid(c1.pid) as handle:
            async with attach_socket_filter(prog, "sock_count", handle) as sock:
                assert sock.fileno() >= 0
                await ping(c1, c2.ip, 4)  # c1 sees 4 requests out and 4 replies in
                await ping(c2, BRIDGE, 3)  # not c1's netns: unseen
            assert sock.fileno() == -1
    assert counters[b"counts"][2].value == 8


async def test_other_tools_filter_survives_attach_detach_and_cleanup(
    counters: Any, pair: list[Container]
) -> None:
    prog = fd_of(counters, "tc_ingress")
    c1, _ = pair
    async with first_peer(pair, "tc_ingress") as (_, peer):
        pass
    dev = peer.host_ifname
    # Any engine running on the machine with a classifier gadget may have added clsact to
    # this new veth already (engine/preattach.py): the other tool adds it only if absent.
    await arun("tc", "qdisc", "add", "dev", dev, "clsact", check=False)
    assert "clsact" in await arun("tc", "qdisc", "show", "dev", dev)
    for hook in ("ingress", "egress"):
        await arun(
            "tc", "filter", "add", "dev", dev, hook, "pref", "1", "protocol", "all",
            "u32", "match", "u32", "0", "0", "flowid", "1:1",
        )  # fmt: skip
    theirs = await others(dev)
    assert {line.split()[1] for line in theirs if "flowid 1:1" in line} == {"ingress:", "egress:"}

    # A previous engine killed with SIGKILL leaves a filter behind.
    killed = await trio.lowlevel.open_process(
        [sys.executable, "-c", ORPHAN_MAKER, str(c1.pid)], stdout=-1
    )
    assert killed.stdout is not None
    with trio.fail_after(60):
        assert (await killed.stdout.receive_some()).startswith(b"attached")
    killed.send_signal(signal.SIGKILL)
    await killed.wait()
    await killed.stdout.aclose()
    assert len(await bpf_filters(dev)) == 1

    async with attach_classifier(prog, "tc_ingress", peer, Direction.INGRESS) as ours:
        assert ours.name.startswith(f"engine_{current_owner()}_")
        assert await remove_orphan_filters(owner_alive) == 1
        after = await bpf_filters(dev)
        assert len(after) == 1
        assert ours.name in after[0]
        assert await others(dev) == theirs
        assert await remove_orphan_filters(owner_alive) == 0
    assert await bpf_filters(dev) == []
    assert await others(dev) == theirs
    assert "clsact" in await arun("tc", "qdisc", "show", "dev", dev)


ORPHAN_MAKER = """
import sys, trio
from bcc import BPF
from engine.attach import Direction, attach_classifier, find_host_peers
from engine.netns import NetnsHandle
bpf = BPF(text="int f(struct __sk_buff *skb) { return -1; }")
fn = bpf.load_func("f", BPF.SCHED_CLS)
async def main():
    async with NetnsHandle.from_pid(int(sys.argv[1])) as handle:
        (peer,) = await find_host_peers(handle, "f")
    async with attach_classifier(fn.fd, "f", peer, Direction.EGRESS):
        print("attached", flush=True)
        await trio.sleep_forever()
trio.run(main)
"""


async def test_no_peer_is_a_clear_error(containers: Containers) -> None:
    with trio.fail_after(30):
        for mode in ("host", "none"):
            c = await start(containers, mode, "--network", mode)
            async with NetnsHandle.from_pid(c.pid) as handle:
                with pytest.raises(AttachError) as caught:
                    await find_host_peers(handle, "tc_ingress")
                assert caught.value.netns == str(handle.id)


async def test_interface_gone_mid_attach_leaves_nothing(
    counters: Any, pair: list[Container]
) -> None:
    prog = fd_of(counters, "tc_egress")
    async with first_peer(pair, "tc_egress") as (handle, peer):
        await arun("docker", "network", "disconnect", "bridge", pair[0].name)
        with pytest.raises(AttachError) as caught:
            async with attach_classifier(prog, "tc_egress", peer, Direction.EGRESS):
                pass
        assert caught.value.interface == peer.host_ifname
        assert caught.value.errno is not None
        with pytest.raises(AttachError):
            await find_host_peers(handle, "tc_egress")


def ports(records: bytes) -> set[int]:
    return {port for (port,) in struct.iter_unpack("=H", records)}


async def test_iter_tcp_lists_only_its_netns(iter_tcp: Any, pair: list[Container]) -> None:
    prog = fd_of(iter_tcp, "bpf_iter__tcp")
    c1, c2 = pair
    await arun("docker", "exec", "-d", c1.name, "nc", "-l", "-p", "7777")
    with trio.fail_after(30):
        async with (
            NetnsHandle.from_pid(c1.pid) as h1,
            NetnsHandle.from_pid(c2.pid) as h2,
            IterLink.attach(prog, "bpf_iter__tcp") as link,
        ):
            # `docker exec -d` returns before nc listens: look again for a while.
            for _ in range(100):
                if 7777 in ports(await run_iter_in_netns(link, h1)):
                    break
                await trio.sleep(0.05)
            else:
                pytest.fail("the listening port never showed up")
            assert ports(await run_iter_in_netns(link, h2)) == set()
            # Named, the target lets a netns without TCP sockets go without a run; not one
            # with a listener.
            assert await run_iter_in_netns(link, h2, target="tcp") == b""
            assert ports(await run_iter_in_netns(link, h1, target="tcp")) == {7777}
            assert ports(await run_iter_in_netns(prog, h1, program="tcp")) == {7777}


async def test_cancellation_always_detaches(counters: Any, pair: list[Container]) -> None:
    tc_prog = fd_of(counters, "tc_ingress")
    sock_prog = fd_of(counters, "sock_count")
    async with first_peer(pair, "tc_ingress") as (handle, peer):
        with trio.move_on_after(0.2) as scope:
            async with (
                attach_classifier(tc_prog, "tc_ingress", peer, Direction.INGRESS),
                attach_socket_filter(sock_prog, "sock_count", handle),
            ):
                assert len(await bpf_filters(peer.host_ifname)) == 1
                await trio.sleep_forever()
        assert scope.cancelled_caught
        assert await bpf_filters(peer.host_ifname) == []
