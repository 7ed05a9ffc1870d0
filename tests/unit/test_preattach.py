"""Which veths PreAttacher takes (engine/attach/preattach.py): the decision alone, read from
the link messages it is told of; the attaching itself is tested on the real kernel
(tests/integration/test_first_packet.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import attrs
import pytest
import trio

from engine.attach.preattach import PreAttacher
from engine.netns import VethLink
from engine.world.selection import Selection
from engine.world.state import World


@attrs.define
class Nursery:
    """What was started, not run."""

    started: list[tuple[Any, ...]] = attrs.Factory(list)

    def start_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        self.started.append(args)


def attacher(untraced: set[int] | None = None) -> tuple[PreAttacher, Nursery]:
    nursery = Nursery()
    pre = PreAttacher(
        [],
        cast(trio.Nursery, nursery),
        World(Selection.parse((), (), False)),
        may_trace=lambda nsid: nsid not in (untraced or set()),
    )
    return pre, nursery


def veth(
    ifindex: int = 40,
    *,
    nsid: int | None = None,
    bridge_port: bool = True,
    deleted: bool = False,
) -> VethLink:
    return VethLink(ifindex, f"veth{ifindex}", 2, nsid, bridge_port, deleted)


@pytest.mark.parametrize(
    "link",
    [
        veth(),  # Docker's: both ends in the host, one on the bridge
        veth(nsid=3),  # a CNI plugin's: made inside the netns, the host end on the bridge
    ],
)
def test_a_new_bridge_port_is_preattached_once(link: VethLink) -> None:
    pre, nursery = attacher()
    pre.on_veth(link)
    pre.on_veth(link)  # its next change (up, carrier): the same pair
    assert len(nursery.started) == 1
    assert link.ifindex in pre.world.preattached


@pytest.mark.parametrize(
    "link",
    [
        veth(bridge_port=False),  # not on a bridge: no container's
        veth(nsid=7),  # its peer's netns is known and not traced
        veth(deleted=True),
    ],
)
def test_others_are_left_alone(link: VethLink) -> None:
    pre, nursery = attacher(untraced={7})
    pre.on_veth(link)
    assert nursery.started == []
    assert pre.world.preattached == set()


def test_one_a_netns_task_has_is_left_alone() -> None:
    pre, nursery = attacher()
    pre.world.host_ifindexes[40] = 4026531999
    pre.on_veth(veth(nsid=3))
    assert nursery.started == []


def test_a_deleted_index_is_new_again() -> None:
    pre, nursery = attacher()
    pre.on_veth(veth())
    pre.on_veth(veth(deleted=True))
    pre.on_veth(veth(nsid=3))  # the index given to a new pair
    assert len(nursery.started) == 2
