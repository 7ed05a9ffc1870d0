"""Packet records know their container with no help from the gadget, and a gadget's own
attribution fields agree with the origin (docs/events.md, "Origin"). Real kernel, real Docker,
ICMP between two containers only.
"""

from __future__ import annotations

from collections import Counter
from contextlib import AbstractAsyncContextManager

import pytest
import trio

from engine import Engine
from engine.gadget.model import Gadget
from tests.support.docker import Containers
from tests.support.gadget_c import IS_ICMP
from tests.support.recorder import Recorder, recorded

pytestmark = [pytest.mark.integration, pytest.mark.docker]

INTO, OUT_OF = 0, 1  # directions, seen from the container
PACKET_PROGRAMS = {"sock", "tc_in", "tc_out"}

# No engine helper, no attribution field: a record is the packet's length and direction.
LEN_DIR = (
    IS_ICMP
    + r"""

#define PACKET_OUTGOING 4

struct packet_t { u32 len; u32 dir; };
BPF_RINGBUF_OUTPUT(by_socket, 64);
BPF_RINGBUF_OUTPUT(by_tc, 64);


SEC("socket")
int sock(struct __sk_buff *skb)
{
    if (!is_icmp(skb))
        return 0;
    struct packet_t p = {.len = skb->len, .dir = skb->pkt_type == PACKET_OUTGOING};
    by_socket.ringbuf_output(&p, sizeof(p), 0);
    return 0;
}

static __always_inline void note(struct __sk_buff *skb, u32 dir)
{
    if (!is_icmp(skb))
        return;
    struct packet_t p = {.len = skb->len, .dir = dir};
    by_tc.ringbuf_output(&p, sizeof(p), 0);
}

SEC("classifier/ingress/tc_in")
int tc_in(struct __sk_buff *skb) { note(skb, 0); return TC_ACT_UNSPEC; }

SEC("classifier/egress/tc_out")
int tc_out(struct __sk_buff *skb) { note(skb, 1); return TC_ACT_UNSPEC; }
"""
)

# The gadget's own attribution fields, as the examples write them.
OWN_FIELDS = (
    IS_ICMP
    + r"""

struct exec_t { u64 mntns_id; u64 netns_id; u64 cgroup_id; char comm[16]; };
struct sock_t { u64 netns_id; u32 len; u32 pad; };
struct tc_t { u32 ifindex; u32 len; };
BPF_RINGBUF_OUTPUT(execs, 64);
BPF_RINGBUF_OUTPUT(socks, 64);
BPF_PERF_OUTPUT(tcs);

SEC("tracepoint/sched/sched_process_exec")
int on_exec(void *ctx)
{
    struct exec_t e = {.mntns_id = engine_mntns_id(), .cgroup_id = bpf_get_current_cgroup_id()};
    struct task_struct__btf *task = (struct task_struct__btf *)bpf_get_current_task();
    struct nsproxy__btf *nsproxy = 0;
    struct net__btf *net = 0;
    unsigned int inum = 0;
    bpf_probe_read_kernel(&nsproxy, sizeof(nsproxy), &task->nsproxy);
    if (nsproxy)
        bpf_probe_read_kernel(&net, sizeof(net), &nsproxy->net_ns);
    if (net)
        bpf_probe_read_kernel(&inum, sizeof(inum), &net->ns.inum);
    e.netns_id = inum;
    bpf_get_current_comm(&e.comm, sizeof(e.comm));
    if (e.comm[0] != 'e' || e.comm[1] != 'n' || e.comm[2] != 'g' || e.comm[3] != 'o' ||
        e.comm[4] != 'w' || e.comm[5] != 'n' || e.comm[6] != '-')
        return 0;
    execs.ringbuf_output(&e, sizeof(e), 0);
    return 0;
}


SEC("socket")
int own_sock(struct __sk_buff *skb)
{
    if (!is_icmp(skb))
        return 0;
    struct sock_t s = {.netns_id = engine_skb_netns_id(skb), .len = skb->len};
    socks.ringbuf_output(&s, sizeof(s), 0);
    return 0;
}

SEC("classifier/ingress/own_tc")
int own_tc(struct __sk_buff *skb)
{
    if (!is_icmp(skb))
        return TC_ACT_UNSPEC;
    struct tc_t t = {.ifindex = skb->ifindex, .len = skb->len};
    tcs.perf_submit(skb, &t, sizeof(t));
    return TC_ACT_UNSPEC;
}
"""
)


ENGOWN = "ln -sf /bin/busybox /tmp/engown-x; /tmp/engown-x; true"  # an exec that exits at once


async def ping(containers: Containers, container: str, dest: str, count: int) -> None:
    assert dest.startswith("172.17.")
    await containers.exec(container, "ping", "-c", str(count), "-i", "0.2", "-W", "2", dest)


def name_of(event: dict[str, object]) -> object:
    container = event["container"]
    return container["name"] if isinstance(container, dict) else None


def traced(
    source: str, name: str, containers: Containers
) -> AbstractAsyncContextManager[tuple[Engine, Recorder]]:
    """An engine running the gadget ``source`` on this test's containers, recorded."""
    gadget = Gadget.from_source(source, name)
    return recorded(gadget, select=containers.selection, iter_interval=3600)


async def attached(rec: Recorder, names: list[str], programs: set[str]) -> None:
    await rec.until(
        lambda: all(rec.attached_programs(container=c) == programs for c in names),
        30,
        "every container attached",
    )


async def test_tc_and_socket_records_of_len_and_dir_name_their_container_per_direction(
    containers: Containers,
) -> None:
    with trio.fail_after(90):
        async with traced(LEN_DIR, "len_dir.c", containers) as (eng, rec):
            one, two, marker = [await containers.run(role) for role in ("one", "two", "marker")]
            await attached(rec, [one, two, marker], PACKET_PROGRAMS)
            await ping(containers, one, await containers.address(two), 3)
            await ping(containers, two, await containers.address(one), 2)
            # The ring buffers keep the kernel's order: once the marker's last reply is seen
            # by both, every packet of the others before it is counted.
            await ping(containers, marker, await containers.address(one), 1)

            def counts() -> Counter[tuple[object, str, int]]:
                return Counter((name_of(e), e["source"], e["data"]["dir"]) for e in rec.events())

            await rec.until(
                lambda: counts()[marker, "by_socket", INTO] and counts()[marker, "by_tc", INTO],
                10,
                "the marker's reply",
            )
    # one: 3 requests out, 3 replies in, then 2 requests in, 2 replies out, and the marker's
    # request in, its reply out; two: 3 in, 3 out, then 2 out, 2 in.
    per_direction = {one: 6, two: 5}
    expected = Counter(
        {
            (c, src, d): n
            for c, n in per_direction.items()
            for src in ("by_socket", "by_tc")
            for d in (INTO, OUT_OF)
        }
    )
    assert Counter({k: n for k, n in counts().items() if k[0] != marker}) == expected
    netns = {c: await containers.netns(c) for c in (one, two, marker)}
    for event in rec.events():
        assert event["data"] == {"len": 98, "dir": event["data"]["dir"]}  # 56 bytes of ping
        assert list(event["data"]) == ["len", "dir"]
        assert event["origin"] == {"netns": netns[name_of(event)]}  # type: ignore[index]
    stats = eng.stats.for_map("len_dir", "by_tc")
    assert stats.lost_kernel == 0 and stats.unselected == 0


async def test_a_gadgets_own_attribution_fields_agree_with_the_origin(
    containers: Containers,
) -> None:
    with trio.fail_after(90):
        async with traced(OWN_FIELDS, "own_fields.c", containers) as (eng, rec):
            one, two = [await containers.run(role) for role in ("one", "two")]
            await attached(rec, [one, two], {"own_sock", "own_tc"})
            for c in (one, two):
                await containers.exec(
                    c, "sh", "-c", "ln -sf /bin/busybox /tmp/engown-x; /tmp/engown-x; true"
                )
            await ping(containers, one, await containers.address(two), 2)
            await rec.until(
                lambda: len(rec.events("execs")) == 2 and len(rec.events("tcs")) == 4,
                20,
                "two execs and four classified packets",
            )
    added = [r["container"] for r in rec.of_type("container_added")]
    by_name = {c["name"]: c for c in added if c["name"] in (one, two)}
    assert {name_of(e) for e in rec.events("execs")} == {one, two}
    for event in rec.events("execs"):
        data, origin, container = event["data"], event["origin"], by_name[name_of(event)]
        assert (data["mntns_id"], data["netns_id"], data["cgroup_id"]) == (
            origin["mntns"],
            origin["netns"],
            origin["cgroup"],
        )
        assert (origin["mntns"], origin["netns"]) == (container["mntns"], container["netns"])
    assert rec.events("socks")
    for event in rec.events("socks"):
        assert event["data"]["netns_id"] == event["origin"]["netns"]
        assert event["origin"]["netns"] == by_name[name_of(event)]["netns"]
    # A classifier's record names its container from the host-side veth, as the gadget's
    # ifindex would: the same interface for every packet of one container.
    ifindexes: dict[object, set[int]] = {}
    for event in rec.events("tcs"):
        assert event["origin"] == {"netns": by_name[name_of(event)]["netns"]}
        ifindexes.setdefault(name_of(event), set()).add(event["data"]["ifindex"])
    assert set(ifindexes) == {one, two}
    assert all(len(found) == 1 for found in ifindexes.values())
    assert ifindexes[one] != ifindexes[two]
    assert eng.stats.for_map("own_fields", "tcs").lost_kernel == 0
