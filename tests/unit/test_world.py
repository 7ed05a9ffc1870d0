"""World.container_for: which container a record names, rule by rule (docs/events.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.sources.containers import Container
from engine.world.selection import Selection
from engine.world.state import Verdict, World, preattached_key
from tests.support.requirements import unavailable

HOST_NETNS = 4026531840


def world() -> World:
    w = World(Selection.parse((), (), False), host_netns=HOST_NETNS)
    w.add_container(Container("a" * 64, "web", "img", 10, netns_inode=101, mntns_inode=201,
                              cgroup_id=301))  # fmt: skip
    w.add_container(Container("b" * 64, "db", "img", 11, netns_inode=102, mntns_inode=202,
                              cgroup_id=302))  # fmt: skip
    w.add_container(Container("c" * 64, "hostnet", "img", 12, netns_inode=HOST_NETNS,
                              mntns_inode=203, shares_netns_with="host"))  # fmt: skip
    w.host_ifindexes[55] = 102  # db's veth, host side
    return w


@pytest.mark.parametrize(
    ("data", "name"),
    [
        ({"mntns_id": 201}, "web"),
        ({"mntns": 203}, "hostnet"),
        ({"netns_id": 101}, "web"),  # a socket filter's record
        ({"netns": 102}, "db"),
        ({"ifindex": 55}, "db"),  # a classifier's record
        ({"cgroup_id": 302}, "db"),
        ({"mntns_id": 201, "netns_id": 102}, "web"),  # mntns first
        ({"netns_id": 101, "ifindex": 55}, "web"),  # netns before ifindex
        ({"netns_id": HOST_NETNS, "ifindex": 55}, "db"),  # host netns: next rule
        ({"netns_id": 0, "ifindex": 55}, "db"),  # 0 is "unknown"
    ],
)
def test_rules_in_order(data: dict[str, int], name: str) -> None:
    found = world().container_for(data)
    assert found is not None
    assert found.name == name


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"netns_id": HOST_NETNS},  # the host's traffic and host-network containers share it
        {"netns_id": 999},
        {"ifindex": 56},  # not a veth we attached to
        {"ifindex": 1, "netns_id": 0},
        {"mntns_id": True},
    ],
)
def test_no_container(data: dict[str, int]) -> None:
    assert world().container_for(data) is None


def test_skb_netns_helper_offsets_from_btf() -> None:
    from engine.gadget.model import Gadget
    from engine.kernel import skb_netns
    from engine.kernel.btf import VMLINUX_BTF, Btf

    if not Path(VMLINUX_BTF).exists():
        unavailable("needs kernel BTF (/sys/kernel/btf/vmlinux)")
    btf = Btf.from_file()
    calls = Gadget.from_source('SEC("socket") int f(struct __sk_buff *s)'
                               " { return engine_skb_netns_id(s) != 0; }")  # fmt: skip
    quiet = Gadget.from_source(
        '// engine_skb_netns_id(s)\nSEC("socket") int f(void *s) { return 0; }'
    )
    (text,) = skb_netns.extra_source(calls, btf)
    assert "static __always_inline u64 engine_skb_netns_id" in text
    assert skb_netns.extra_source(quiet, btf) == []
    # sk_buff.dev sits behind anonymous unions: found through them, inside the struct.
    dev = btf.member_offset(*skb_netns.SKB_DEV)
    assert 0 < dev < 64
    assert f"(void *)skb + {dev})" in text


# --- speculative attach: netns pending identification --------------------------------------

RUNTIME = "/run/docker/netns/"


def selecting(*names: str, timeout: float = 5.0) -> World:
    return World(
        Selection.parse([f"name={n}" for n in names], (), False),
        host_netns=HOST_NETNS,
        identify_timeout=timeout,
    )


def container(name: str, netns: int, mntns: int) -> Container:
    return Container(name * 4, name, "img", 10, netns_inode=netns, mntns_inode=mntns)


def test_runtime_netns_is_traced_at_once_then_kept_when_selected() -> None:
    w = selecting("web")
    w.add_netns(101, RUNTIME + "aaa", now=0.0)
    target = w.desired_netns()[101]
    assert target.speculative
    assert target.containers == ()
    assert w.screen({"netns_id": 101}) == (Verdict.HOLD, 101)
    w.add_container(container("web", 101, 201))
    assert w.screen({"netns_id": 101}) == (Verdict.HOLD, 101)  # held until settled, in order
    (identified,) = w.settle(now=0.5)
    assert identified.keep
    assert identified.container is not None
    assert identified.container.name == "web"
    assert not w.is_pending(101)
    assert not w.desired_netns()[101].speculative
    assert w.screen({"netns_id": 101}) == (Verdict.DELIVER, 101)
    assert w.settle(now=10.0) == []


def test_unselected_container_is_detached_and_its_records_dropped() -> None:
    w = selecting("web")
    w.add_netns(102, RUNTIME + "bbb", now=0.0)
    w.host_ifindexes[55] = 102  # a classifier attached speculatively
    w.add_container(container("db", 102, 202))
    assert 102 not in w.desired_netns()  # the runtime said whose: not selected
    (identified,) = w.settle(now=0.2)
    assert not identified.keep
    assert w.screen({"netns_id": 102}) == (Verdict.DROP, 102)
    assert w.screen({"ifindex": 55}) == (Verdict.DROP, 102)
    w.forget_ifindex(55)  # detached; its records may still be in the buffers
    assert w.screen({"ifindex": 55}) == (Verdict.DROP, 102)
    w.remove_container("db" * 4)
    w.remove_netns(102)
    assert w.screen({"ifindex": 55}) == (Verdict.DELIVER, 0)  # forgotten with the netns


def test_never_identified_times_out() -> None:
    w = selecting("web", timeout=5.0)
    w.add_netns(103, RUNTIME + "ccc", now=10.0)
    w.add_netns(104, RUNTIME + "ddd", now=12.0)
    assert w.next_deadline() == 15.0
    assert w.settle(now=14.9) == []
    assert set(w.desired_netns()) == {103, 104}
    (expired,) = w.settle(now=15.0)
    assert (expired.inode, expired.container, expired.keep) == (103, None, False)
    assert set(w.desired_netns()) == {104}
    assert w.next_deadline() == 17.0
    assert w.screen({"netns_id": 103}) == (Verdict.DROP, 103)


def test_vanished_while_pending_settles() -> None:
    w = selecting("web")
    w.add_netns(105, RUNTIME + "eee", now=0.0)
    w.remove_netns(105)
    assert w.desired_netns() == {}
    (gone,) = w.settle(now=0.1)
    assert (gone.inode, gone.keep) == (105, False)
    assert w.next_deadline() is None


@pytest.mark.parametrize(
    ("path", "inode", "known"),
    [
        ("/run/netns/mine", 106, False),  # `ip netns add`: not a runtime's
        (RUNTIME + "fff", HOST_NETNS, False),
        (RUNTIME + "fff", 101, True),  # already claimed by a known container
    ],
)
def test_not_pending(path: str, inode: int, known: bool) -> None:
    w = selecting("web")
    if known:
        w.add_container(container("web", 101, 201))
    w.add_netns(inode, path, now=0.0)
    assert not w.is_pending(inode)
    assert w.next_deadline() is None


def test_no_selection_nothing_pending_or_held() -> None:
    w = World(Selection.parse((), (), False), host_netns=HOST_NETNS)
    w.add_netns(107, "/var/run/docker/netns/ggg", now=0.0)
    assert not w.is_pending(107)
    assert not w.desired_netns()[107].speculative
    assert w.screen({"netns_id": 107}) == (Verdict.DELIVER, 0)


def test_process_netns_is_pending_too() -> None:
    # Found through the container's first process before the runtime's bind mount.
    w = selecting("web")
    w.add_netns(109, "/proc/42/ns/net", now=0.0)
    assert w.is_pending(109)
    assert not selecting("web").is_pending(109)


def test_static_probe_records_are_not_screened() -> None:
    w = selecting("web")
    w.add_netns(108, RUNTIME + "hhh", now=0.0)
    assert w.screen({"mntns_id": 999, "netns_id": 108}) == (Verdict.DELIVER, 0)


def test_deselected_container_records_dropped() -> None:
    w = selecting("web")
    w.add_container(container("web", 101, 201))
    assert w.screen({"netns_id": 101}) == (Verdict.DELIVER, 101)
    w.selection = Selection.parse(["name=other"], (), False)
    assert w.screen({"netns_id": 101}) == (Verdict.DROP, 101)


@pytest.mark.parametrize("select", [False, True])
def test_preattached_veth_records_held_by_veth_until_handed(select: bool) -> None:
    # engine/preattach.py: classifiers on a veth no netns has yet; even with no selection
    # its records must not pass as nobody's.
    w = selecting("web") if select else World(Selection.parse((), (), False))
    w.preattached.add(60)
    assert w.screen({"ifindex": 60}) == (Verdict.HOLD, preattached_key(60))
    assert preattached_key(60) < 0  # never a netns inode
    w.host_ifindexes[60] = 110  # handed to a netns task: still held by veth, in order
    assert w.screen({"ifindex": 60})[1] == preattached_key(60)
    w.preattached.discard(60)
    if select:
        w.add_container(container("web", 110, 210))
    assert w.screen({"ifindex": 60}) == (Verdict.DELIVER, 110 if select else 0)
