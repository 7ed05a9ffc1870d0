"""Network namespaces: identity, handles, running code inside one.

The live list of them is a source: engine.sources.netns.
"""

from engine.netns.handle import CLONE_NEWNET, NetnsHandle, NetnsId, host_netns_id
from engine.netns.links import LinkWatcher, VethLink
from engine.netns.rtnl import NsidClient
from engine.netns.thread import NetnsNotRestoredError, call_inside, in_netns, run_in_netns

__all__ = [
    "CLONE_NEWNET",
    "LinkWatcher",
    "NetnsHandle",
    "NetnsId",
    "NetnsNotRestoredError",
    "NsidClient",
    "VethLink",
    "call_inside",
    "host_netns_id",
    "in_netns",
    "run_in_netns",
]
