"""Hook for dns.c: one line per DNS query, saying which container asked whom for what.

    engine run examples/dns.c --hook examples/dns_hook.py [--select name=web*]

On stderr (stdout stays the engine's own output):

    dns: web asked 10.0.0.53 for api.internal (A)
    dns: resolver received from 172.17.0.3 a query for api.internal (A)

A query between two traced containers shows up twice: sent by one, received by the other.
``(host)`` is a query seen in a netns that is not a known container's.
"""

from __future__ import annotations

import sys

import engine

QTYPES = {
    1: "A",
    2: "NS",
    5: "CNAME",
    6: "SOA",
    12: "PTR",
    15: "MX",
    16: "TXT",
    28: "AAAA",
    33: "SRV",
    65: "HTTPS",
    255: "ANY",
}


async def on_event(event: engine.Event) -> None:
    data = event.data
    who = event.container["name"] if event.container else "(host)"
    what = f"{data['name']} ({QTYPES.get(data['qtype'], data['qtype'])})"
    if data["outgoing"]:
        line = f"{who} asked {data['daddr']} for {what}"
    else:
        line = f"{who} received from {data['saddr']} a query for {what}"
    print(f"dns: {line}", file=sys.stderr, flush=True)
