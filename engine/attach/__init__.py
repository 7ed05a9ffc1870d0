"""Per-netns attachers: each an async context manager that always detaches."""

from engine.attach.iterator import IterLink, run_iter_in_netns
from engine.attach.owner import current_owner, owner_alive
from engine.attach.socket_filter import attach_socket_filter
from engine.attach.tc import (
    Direction,
    HostPeer,
    TcFilter,
    attach_classifier,
    find_host_peers,
    remove_orphan_filters,
)

__all__ = [
    "Direction",
    "HostPeer",
    "IterLink",
    "TcFilter",
    "attach_classifier",
    "attach_socket_filter",
    "current_owner",
    "find_host_peers",
    "owner_alive",
    "remove_orphan_filters",
    "run_iter_in_netns",
]
