"""World.container_for: which container a record names, rule by rule (docs/events.md)."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from engine.sources.containers import Container, K8s
from engine.sources.netns_paths import is_runtime_netns
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
    w.remove_container(container("db", 102, 202))
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


def test_reported_after_the_timeout_is_traced_and_delivered_again() -> None:
    # Its runtime was away longer than the identify timeout (a restart): the netns was given
    # up, then the runtime re-lists and reports a selected container in it.
    w = selecting("web", timeout=1.0)
    w.add_netns(106, "/run/netns/cni-1", now=0.0)
    w.host_ifindexes[56] = 106
    (expired,) = w.settle(now=1.0)
    assert not expired.keep
    w.forget_ifindex(56)
    assert w.screen({"netns_id": 106}) == (Verdict.DROP, 106)
    w.add_container(container("web", 106, 206))
    assert 106 in w.desired_netns()
    w.host_ifindexes[56] = 106
    assert w.screen({"netns_id": 106}) == (Verdict.DELIVER, 106)
    assert w.screen({"ifindex": 56}) == (Verdict.DELIVER, 106)
    # An unselected one stays given up.
    w.add_netns(107, "/run/netns/cni-2", now=2.0)
    w.settle(now=3.0)
    w.add_container(container("db", 107, 207))
    assert w.screen({"netns_id": 107}) == (Verdict.DROP, 107)


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


def test_a_netns_unclaimed_for_the_identify_timeout_already_is_not_pending() -> None:
    # Found at start through a process that has run for a minute (a `runc init` whose daemon
    # was killed while making its container): no runtime is about to report it.
    w = selecting("web", timeout=5.0)
    w.add_netns(109, "/proc/42/ns/net", now=100.0, existed=60.0)
    assert not w.is_pending(109)
    assert w.next_deadline() is None
    assert 109 not in w.desired_netns()  # no classifier on its veth, not even for a moment
    # Younger than the timeout: maybe a container being made as the engine starts.
    w.add_netns(110, "/proc/43/ns/net", now=100.0, existed=4.9)
    assert w.is_pending(110)
    assert w.desired_netns()[110].speculative
    # Reported after all, and selected: traced as any selected container's netns.
    w.add_container(container("web", 109, 209))
    target = w.desired_netns()[109]
    assert (target.containers[0].name, target.speculative) == ("web", False)
    assert w.screen({"netns_id": 109}) == (Verdict.DELIVER, 109)


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


def test_netns_that_runtimes_name_are_theirs() -> None:
    for path in (
        "/run/netns/cni-0b8f7c4e-1111-2222-3333-444455556666",  # CNI, for a CRI pod sandbox
        "/var/run/netns/cni-0b8f7c4e-1111-2222-3333-444455556666",
        "/run/netns/netns-cd060c01-74d9-7c4c-bc8f-ff199d941c58",  # podman
        "/run/docker/netns/1a2b3c4d5e6f",
        "/proc/42/ns/net",
    ):
        assert is_runtime_netns(path), path
    for path in ("/run/netns/blue", "/run/netns/sub/cni-1", "/tmp/cni-1", "/proc/self/ns/net"):
        assert not is_runtime_netns(path), path


def test_the_same_id_in_two_runtimes_is_two_containers() -> None:
    w = World(Selection(), host_netns=HOST_NETNS)
    in_docker = Container("f" * 64, "web", "img", 10, netns_inode=101, mntns_inode=201)
    in_podman = attrs.evolve(in_docker, runtime="podman", netns_inode=102, mntns_inode=202)
    in_k8s = attrs.evolve(
        in_docker,
        runtime="containerd",
        containerd_namespace="k8s.io",
        netns_inode=103,
        mntns_inode=203,
    )
    in_default = attrs.evolve(in_k8s, containerd_namespace="default", mntns_inode=204)
    for c in (in_docker, in_podman, in_k8s, in_default):
        w.add_container(c)
    assert len(w.containers) == 4
    assert w.container_for({"mntns_id": 202}) == in_podman
    assert w.container_json(in_default)["id"] == "f" * 64  # the JSON id stays the runtime's
    w.remove_container(in_k8s)
    assert w.container_for({"mntns_id": 203}) is None
    assert w.container_for({"mntns_id": 204}) == in_default
    assert {c.runtime for c in w.containers.values()} == {"docker", "podman", "containerd"}


def test_a_pod_is_one_netns_target_named_after_its_sandbox() -> None:
    w = World(Selection.parse(["k8s.namespace=shop"], (), False), host_netns=HOST_NETNS)
    pod = K8s("shop", "web-1", "uid-1", None)
    w.add_netns(110, "/run/netns/cni-1", now=0.0)
    assert w.desired_netns()[110].speculative  # CNI's netns: traced before the sandbox shows
    sandbox = Container("s" * 64, "web-1", "pause", 10, netns_inode=110, mntns_inode=210, k8s=pod)
    app = Container(
        "a" * 64,
        "web-1/app",
        "img",
        11,
        netns_inode=110,
        mntns_inode=211,
        shares_netns_with="s" * 64,
        k8s=attrs.evolve(pod, container="app"),
    )
    w.add_container(sandbox)
    w.add_container(app)
    (identified,) = w.settle(now=0.1)
    assert identified.keep
    (target,) = w.desired_netns().values()
    assert (target.inode, target.speculative) == (110, False)
    assert [c.name for c in target.containers] == ["web-1", "web-1/app"]
    assert w.container_for({"netns_id": 110}) == sandbox
    assert w.container_for({"mntns_id": 211}) == app


def test_desired_changes_follow_what_changed_only() -> None:
    w = selecting("web", timeout=1.0)
    assert w.desired_changes() == []  # the selection's first look: nothing there yet
    w.add_netns(110, RUNTIME + "fff", now=0.0)
    w.add_netns(111, RUNTIME + "ggg", now=0.0)
    assert [(i, t is not None, r) for i, t, r in w.desired_changes()] == [
        (110, True, False),
        (111, True, False),
    ]
    assert w.desired_changes() == []  # nothing changed since
    w.add_container(container("db", 111, 211))  # not selected: no longer traced
    w.remove_netns(110)
    w.add_netns(110, RUNTIME + "hhh", now=0.5)  # its inode given to a new netns at once
    changes = {i: (t, r) for i, t, r in w.desired_changes()}
    assert changes[111] == (None, False)
    target, replaced = changes[110]
    assert replaced
    assert target is not None
    assert target.path == RUNTIME + "hhh"
    w.selection = Selection.parse([], (), False)  # everything: every netns looked at again
    assert {i for i, t, _ in w.desired_changes() if t is not None} == {110, 111}
    assert w.desired_changes() == []


def test_a_netns_gone_under_its_container_is_not_traced_again() -> None:
    """The netns source said the netns is gone while the runtime still lists its container:
    the container's path leads nowhere, and a second attach there would give each program a
    second story (seen as two attach_failed in tests/faults/test_attach_races.py)."""
    w = selecting("web")
    web = attrs.evolve(container("web", 120, 220), netns_path=RUNTIME + "iii")
    w.add_container(web)
    w.add_netns(120, RUNTIME + "iii", now=0.0)
    assert [(i, t is not None) for i, t, _ in w.desired_changes()] == [(120, True)]
    w.remove_netns(120)
    assert w.desired_changes() == [(120, None, True)]
    assert 120 not in w.desired_netns()
    # Its inode given to a new netns: traced again, as soon as the source sees it.
    w.add_netns(120, RUNTIME + "jjj", now=1.0)
    ((inode, target, _),) = w.desired_changes()
    assert inode == 120 and target is not None and target.path == RUNTIME + "jjj"
    w.remove_netns(120)
    w.remove_container(web)
    assert not w._gone  # nothing kept once no container claims the inode
