"""LinkWatcher's table: a netns id that goes takes its host-side peers with it."""

from __future__ import annotations

import struct

from engine.netns.links import (
    IFLA_IFNAME,
    IFLA_INFO_KIND,
    IFLA_LINK,
    IFLA_LINK_NETNSID,
    IFLA_LINKINFO,
    RTM_NEWLINK,
    LinkWatcher,
)
from engine.netns.netlink import pack_attr, pack_message, pack_str, pack_u32
from engine.netns.rtnl import NETNSA_NSID, RTM_DELNSID

_IFINFO = struct.Struct("=BxHiII")


def new_veth(ifindex: int, name: str, peer: int, nsid: int) -> bytes:
    body = (
        _IFINFO.pack(0, 1, ifindex, 0, 0)
        + pack_str(IFLA_IFNAME, name)
        + pack_u32(IFLA_LINK, peer)
        + pack_attr(IFLA_LINK_NETNSID, struct.pack("=i", nsid))
        + pack_attr(IFLA_LINKINFO, pack_str(IFLA_INFO_KIND, "veth"))
    )
    return pack_message(RTM_NEWLINK, 0, 0, body)


def nsid_gone(nsid: int) -> bytes:
    body = b"\0" * 4 + pack_attr(NETNSA_NSID, struct.pack("=i", nsid))
    return pack_message(RTM_DELNSID, 0, 0, body)


def test_an_id_given_again_names_only_the_new_netns_veth() -> None:
    links = LinkWatcher()
    links._take(new_veth(10, "old-h", 2, 5))
    assert [v.ifindex for v in links.peers_of(5)] == [10]
    # The old netns is destroyed: its id goes before its veth does, and is given anew.
    links._take(nsid_gone(5) + new_veth(11, "new-h", 2, 5))
    assert [v.ifindex for v in links.peers_of(5)] == [11]
    assert links.has(10, "old-h")  # still there until its RTM_DELLINK
