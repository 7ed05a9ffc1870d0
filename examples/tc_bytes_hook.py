"""Hook for tc_bytes.c: a table of packets and bytes per container, both directions.

    engine run examples/tc_bytes.c --hook examples/tc_bytes_hook.py

Every TC_BYTES_INTERVAL seconds (default 5) and once more when the engine stops, the table on
stderr (stdout stays the engine's own output), read from the gadget's `traffic` map, which the
kernel keeps: nothing is lost there even when the ring buffer overflows.

    tc_bytes: CONTAINER          IN_PACKETS   IN_BYTES OUT_PACKETS  OUT_BYTES
    tc_bytes: web                        12       1468          12       1012

"In" is what entered the container, "out" what it sent (docs/tc.md). The map is keyed by the
host-side veth; its container is learnt from the gadget's per-packet events, which the engine
names by that veth's ifindex.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import engine

INTERVAL = float(os.environ.get("TC_BYTES_INTERVAL", "5"))
INTO, OUT_OF = 0, 1  # the gadget's directions

ROW = "{:<30} {:>10} {:>10} {:>11} {:>10}"

names: dict[int, str] = {}  # host-side ifindex -> container name


async def on_event(event: engine.Event) -> None:
    if event.source == "packets" and event.container is not None:
        names[event.data["ifindex"]] = event.container["name"]


def table(items: list[tuple[Any, Any]]) -> list[str]:
    rows: dict[str, list[int]] = {}  # name -> in packets, in bytes, out packets, out bytes
    for key, value in items:
        name = names.get(key.ifindex, f"ifindex {key.ifindex}")
        row = rows.setdefault(name, [0, 0, 0, 0])
        at = 0 if key.direction == INTO else 2
        row[at] += value.packets
        row[at + 1] += value.bytes
    lines = [ROW.format("CONTAINER", "IN_PACKETS", "IN_BYTES", "OUT_PACKETS", "OUT_BYTES")]
    for name, (ip, ib, op, ob) in sorted(rows.items()):
        lines.append(ROW.format(name, ip, ib, op, ob))
    return lines


async def report(traffic: engine.MapView) -> None:
    for line in table(await traffic.items()):
        print(f"tc_bytes: {line}", file=sys.stderr)
    sys.stderr.flush()


def setup(eng: engine.Engine) -> None:
    traffic = eng.map("tc_bytes", "traffic")
    eng.every(INTERVAL, lambda: report(traffic))  # and the final table, when the engine stops
