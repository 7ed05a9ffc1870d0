"""Where a record came from and whether it is delivered, held or dropped (world/placement.py),
and what the kernel's selection maps say (engine/world/kernel_filter.py)."""

from __future__ import annotations

import struct

import pytest

from engine.events.decode import Field, build_decoder
from engine.events.origin import HEADER, Origin
from engine.sources.containers import Container
from engine.world.kernel_filter import kernel_selection
from engine.world.placement import place
from engine.world.selection import Selection
from engine.world.state import Verdict, World

HOST_NETNS, HOST_MNTNS = 4026531840, 4026531841
TASK, PACKET, KERNEL = 1, 2, 3
WEB = Container("a" * 64, "web", "img", 10, netns_inode=101, mntns_inode=201, cgroup_id=301)
DB = Container("b" * 64, "db", "img", 11, netns_inode=102, mntns_inode=202, cgroup_id=302)


def world(*select: str, host: bool = False, exclude: tuple[str, ...] = ()) -> World:
    w = World(
        Selection.parse(list(select), list(exclude), host),
        host_netns=HOST_NETNS,
        host_mntns=HOST_MNTNS,
        identify_timeout=5.0,
    )
    w.add_container(WEB)
    w.add_container(DB)
    w.host_ifindexes[55] = 102  # db's veth, host side
    return w


def task(mntns: int, cgroup: int = 1) -> Origin:
    return Origin(TASK, tgid=7, mntns=mntns, netns=HOST_NETNS, cgroup=cgroup)


def name(placed: tuple[Verdict, int, Container | None]) -> str | None:
    return None if placed[2] is None else placed[2].name


def test_the_header_is_read_and_the_record_decoded_after_it() -> None:
    raw = struct.pack("<IIIIQII", TASK, 7, 201, 101, 301, 0, 0) + struct.pack("<II", 5, 6)
    origin = Origin.of(raw)
    assert origin == Origin(TASK, 7, 201, 101, 301, 0)
    decoder = build_decoder([Field("pid", "u32"), Field("seq", "u32")])
    assert decoder.decode(raw, HEADER) == {"pid": 5, "seq": 6}
    assert decoder.decode(raw[: HEADER + 4], HEADER) == {"pid": 5, "seq": 0}  # short: padded
    assert origin.to_json(HOST_NETNS, {}) == {"mntns": 201, "netns": 101, "cgroup": 301, "tgid": 7}
    assert Origin(KERNEL).to_json(HOST_NETNS, {}) == {}


def test_the_task_origin_names_the_container_without_any_field() -> None:
    w = world()
    assert place(w, task(201), {}, 0.0) == (Verdict.DELIVER, 0, WEB)
    assert name(place(w, task(999, cgroup=302), {}, 0.0)) == "db"  # cgroup as the fallback
    assert place(w, task(HOST_MNTNS), {}, 0.0) == (Verdict.DELIVER, 0, None)


def test_the_origin_decides_and_the_gadgets_own_fields_agree_or_fill_in() -> None:
    w = world()
    # A gadget that writes its mount namespace as the examples do: the same container.
    assert name(place(w, task(202), {"mntns_id": 202}, 0.0)) == "db"
    # The origin wins over a field naming another container.
    assert name(place(w, task(201), {"mntns_id": 202}, 0.0)) == "web"
    # The origin names none (the host's task): the gadget's field says whose record it is.
    assert name(place(w, task(HOST_MNTNS), {"mntns_id": 202}, 0.0)) == "db"


def test_packets_by_the_socket_filters_netns_or_the_classifiers_veth() -> None:
    w = world()
    socket_filter = Origin(PACKET, netns=101, ifindex=2)
    classifier = Origin(PACKET, netns=0, ifindex=55)
    shared = Origin(PACKET, netns=HOST_NETNS, ifindex=55)  # a classifier in a shared function
    assert name(place(w, socket_filter, {}, 0.0)) == "web"
    assert name(place(w, classifier, {}, 0.0)) == "db"
    assert name(place(w, shared, {}, 0.0)) == "db"
    assert shared.to_json(HOST_NETNS, w.host_ifindexes) == {"netns": 102}
    assert socket_filter.to_json(HOST_NETNS, w.host_ifindexes) == {"netns": 101}


def test_kernel_context_records_go_by_the_gadgets_fields_else_the_hosts() -> None:
    w = world("name=web")
    assert place(w, Origin(KERNEL), {"mntns_id": 201}, 0.0) == (Verdict.DELIVER, 0, WEB)
    assert place(w, Origin(KERNEL), {"mntns_id": 202}, 0.0) == (Verdict.DROP, 0, DB)
    assert place(w, Origin(KERNEL), {"netns_id": 102}, 0.0)[0] is Verdict.DROP
    assert place(w, Origin(KERNEL), {}, 0.0) == (Verdict.DROP, 0, None)  # the host's
    assert place(world("name=web", host=True), Origin(KERNEL), {}, 0.0)[0] is Verdict.DELIVER


@pytest.mark.parametrize(
    ("mntns", "host", "verdict"),
    [
        (201, False, Verdict.DELIVER),
        (202, False, Verdict.DROP),
        (HOST_MNTNS, False, Verdict.DROP),
        (HOST_MNTNS, True, Verdict.DELIVER),
        (0, False, Verdict.DROP),  # an exiting task: nothing to identify it by
    ],
)
def test_the_check_behind_the_kernel(mntns: int, host: bool, verdict: Verdict) -> None:
    assert place(world("name=web", host=host), task(mntns), {}, 0.0)[0] is verdict


def test_excluded_containers_are_dropped_with_no_select() -> None:
    w = world(exclude=("name=db",))
    assert place(w, task(202), {}, 0.0)[0] is Verdict.DROP
    assert place(w, task(201), {}, 0.0)[0] is Verdict.DELIVER
    assert kernel_selection(w) == (2, {201: 1, 202: 0, HOST_MNTNS: 1})


def test_an_unknown_mount_namespace_is_held_until_its_container_is_reported() -> None:
    w = world("name=new*")
    woken: list[None] = []
    w.on_pending = lambda: woken.append(None)
    assert place(w, task(500), {}, 1.0) == (Verdict.HOLD, 500, None)
    assert place(w, task(500), {}, 1.5) == (Verdict.HOLD, 500, None)
    assert len(woken) == 1 and w.next_deadline() == 6.0
    assert w.settle(2.0) == []  # nobody claims it yet
    w.add_container(Container("c" * 64, "new-1", "img", 12, netns_inode=103, mntns_inode=500))
    [identified] = w.settle(2.5)
    assert (identified.inode, identified.keep) == (500, True)
    assert identified.container is not None and identified.container.name == "new-1"
    assert place(w, task(500), {}, 3.0)[0] is Verdict.DELIVER
    assert w.next_deadline() is None


def test_an_unclaimed_mount_namespace_is_rejected_and_the_kernel_told() -> None:
    w = world("name=web")
    assert place(w, task(600), {}, 0.0)[0] is Verdict.HOLD
    assert w.settle(4.9) == []
    [identified] = w.settle(5.0)
    assert (identified.inode, identified.container, identified.keep) == (600, None, False)
    assert place(w, task(600), {}, 6.0)[0] is Verdict.DROP
    mode, known = kernel_selection(w)
    assert mode == 2  # the kernel lets unknown namespaces through, for the engine to hold
    assert known == {600: 0, 201: 1, 202: 0, HOST_MNTNS: 0}


def test_with_host_an_unclaimed_mount_namespace_is_the_hosts() -> None:
    w = world("name=web", host=True)
    place(w, task(600), {}, 0.0)
    [identified] = w.settle(5.0)
    assert identified.keep and identified.container is None
    assert kernel_selection(w)[1][HOST_MNTNS] == 1


def test_kernel_selection_modes() -> None:
    assert kernel_selection(world()) == (0, {})  # no selection: the kernel lets all through
    w = world("name=web")
    w.follows_containers = False  # nothing will ever identify an unknown namespace
    assert kernel_selection(w)[0] == 1
    assert place(w, task(700), {}, 0.0)[0] is Verdict.DROP
