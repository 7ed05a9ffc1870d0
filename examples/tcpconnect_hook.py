"""Hook for tcpconnect.c: where each container connects to, and how well.

    engine run examples/tcpconnect.c --hook examples/tcpconnect_hook.py [--select name=web*]

Every TCPCONNECT_INTERVAL seconds (default 5) and once more when the engine stops, one line
per container and destination on stderr (stdout stays the engine's own output):

    tcpconnect: web -> 10.0.0.7:5432 established=12 failed=0 avg=0.21ms
    tcpconnect: web -> 172.17.0.1:1 established=0 failed=3 avg=0.05ms

Counts are since the start; ``(host)`` is for connections made outside any container; the
average is the time from connect() to the outcome.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import attrs

import engine

INTERVAL = float(os.environ.get("TCPCONNECT_INTERVAL", "5"))


@attrs.define
class Tally:
    established: int = 0
    failed: int = 0
    total_ns: int = 0

    def line(self) -> str:
        average = self.total_ns / (self.established + self.failed) / 1e6
        return f"established={self.established} failed={self.failed} avg={average:.2f}ms"


tallies: dict[tuple[str, str], Tally] = {}


def destination(data: Mapping[str, Any]) -> str:
    if data["family"] == 10:
        return f"[{data['daddr6']}]:{data['dport']}"
    return f"{data['daddr']}:{data['dport']}"


def report() -> None:
    for (name, to), tally in sorted(tallies.items()):
        print(f"tcpconnect: {name} -> {to} {tally.line()}", file=sys.stderr)
    sys.stderr.flush()


async def on_event(event: engine.Event) -> None:
    name = event.container["name"] if event.container else "(host)"
    tally = tallies.setdefault((name, destination(event.data)), Tally())
    if event.data["result"] == "established":
        tally.established += 1
    else:
        tally.failed += 1
    tally.total_ns += event.data["latency_ns"]


def setup(eng: engine.Engine) -> None:
    eng.every(INTERVAL, report)  # and the final counts, when the engine stops
