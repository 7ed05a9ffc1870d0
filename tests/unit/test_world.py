"""World.container_for: which container a record names, rule by rule (docs/events.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.containers import Container
from engine.selection import Selection
from engine.world import World

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
    from engine import skb_netns
    from engine.btf import VMLINUX_BTF, Btf
    from engine.gadget import Gadget

    if not Path(VMLINUX_BTF).exists():
        pytest.skip("no kernel BTF")
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
    dev = skb_netns.member_offset(btf, *skb_netns.SKB_DEV)
    assert 0 < dev < 64
    assert f"(void *)skb + {dev})" in text
