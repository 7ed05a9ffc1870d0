"""Hook for execsnoop.c: how many programs each container executed, every few seconds.

    engine run examples/execsnoop.c --hook examples/execsnoop_hook.py --host

Every EXECSNOOP_INTERVAL seconds (default 5) and once more when the engine stops, one line on
stderr (stdout stays the engine's own output):

    execsnoop: web=12 db=3 (host)=40

Counts are since the start, busiest first; ``(host)`` counts execs outside any container.
"""

from __future__ import annotations

import collections
import os
import sys

import engine

INTERVAL = float(os.environ.get("EXECSNOOP_INTERVAL", "5"))

execs: collections.Counter[str] = collections.Counter()


def report() -> None:
    counts = " ".join(f"{name}={n}" for name, n in execs.most_common())
    print(f"execsnoop: {counts or 'no execs yet'}", file=sys.stderr, flush=True)


async def on_event(event: engine.Event) -> None:
    execs[event.container["name"] if event.container else "(host)"] += 1


def setup(eng: engine.Engine) -> None:
    eng.every(INTERVAL, report)  # and the final counts, when the engine stops
