"""The host's links followed for the classifiers: they attach as soon as a veth is in its
netns, and, when containers are followed, are pre-attached to each new veth (preattach.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from engine.attach.per_netns import PerNetns
from engine.attach.preattach import PreAttacher
from engine.gadget.sections import Kind
from engine.netns import LinkWatcher

if TYPE_CHECKING:
    from engine.world.tracker import Tracker


async def watch_links(
    per_netns: PerNetns, tracker: Tracker, sources: trio.Nursery, *, follow_containers: bool
) -> None:
    """With classifiers: a link watcher for ``per_netns``, started in ``sources``."""
    classifiers = [p for _, p in per_netns.programs() if p.spec.kind is Kind.CLASSIFIER]
    if not classifiers:
        return
    per_netns.links = LinkWatcher()
    if follow_containers:
        per_netns.preattach = PreAttacher(
            classifiers,
            sources,
            tracker.world,
            settled=tracker.preattach_settled,
            rtnl=per_netns.rtnl,
            detach_rtnl=per_netns.detach_rtnl,
            links=per_netns.links,
            may_trace=tracker.may_trace_nsid,
        )
        per_netns.links.on_veth = per_netns.preattach.on_veth
    await sources.start(per_netns.links.run)
