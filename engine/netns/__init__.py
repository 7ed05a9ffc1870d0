"""Network namespaces: identity, handles, running code inside one, and the live list of them."""

from engine.netns._handle import CLONE_NEWNET, NetnsHandle, NetnsId, host_netns_id
from engine.netns._links import LinkWatcher, VethLink
from engine.netns._rtnl import NsidClient
from engine.netns._source import NetnsAdded, NetnsEvent, NetnsRemoved, NetnsSource
from engine.netns._thread import in_netns, run_in_netns

__all__ = [
    "CLONE_NEWNET",
    "LinkWatcher",
    "NetnsAdded",
    "NetnsEvent",
    "NetnsHandle",
    "NetnsId",
    "NetnsRemoved",
    "NetnsSource",
    "NsidClient",
    "VethLink",
    "host_netns_id",
    "in_netns",
    "run_in_netns",
]
