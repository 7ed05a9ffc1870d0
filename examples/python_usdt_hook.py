"""Hook for python_usdt.c: the Python functions each process calls most, every few seconds.

    engine run examples/python_usdt.c --hook examples/python_usdt_hook.py

Every PYTHON_USDT_INTERVAL seconds (default 5) and once more when the engine stops, one line per
process on stderr (stdout stays the engine's own output), its five most called functions:

    python_usdt: pid 4242: parse=1200 (json/decoder.py) <lambda>=800 (app.py) ...

CPython 3.11 fires the probe only while a profile or trace function is set in the process
(``sys.setprofile``/``sys.settrace``, as profilers and debuggers do): other processes are quiet.
"""

from __future__ import annotations

import collections
import os
import sys

import engine

INTERVAL = float(os.environ.get("PYTHON_USDT_INTERVAL", "5"))
TOP = 5

calls: dict[int, collections.Counter[tuple[str, str]]] = {}  # pid -> (function, file) -> n


async def on_event(event: engine.Event) -> None:
    data = event.data
    calls.setdefault(data["pid"], collections.Counter())[data["function"], data["file"]] += 1


def report() -> None:
    for pid, counter in sorted(calls.items()):
        top = " ".join(f"{fn}={n} ({file})" for (fn, file), n in counter.most_common(TOP))
        print(f"python_usdt: pid {pid}: {top}", file=sys.stderr)
    sys.stderr.flush()


def setup(eng: engine.Engine) -> None:
    eng.every(INTERVAL, report)  # and the final counts, when the engine stops
