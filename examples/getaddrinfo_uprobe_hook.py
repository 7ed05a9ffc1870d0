"""Hook for getaddrinfo_uprobe.c: one line per name lookup, with its outcome by name.

    engine run examples/getaddrinfo_uprobe.c --hook examples/getaddrinfo_uprobe_hook.py

On stderr (stdout stays the engine's own output), and a summary per program when the engine
stops:

    getaddrinfo: curl (pid 4242) example.internal -> ok
    getaddrinfo: python3 (pid 4250) no-such-host -> EAI_NONAME
    getaddrinfo: curl looked up 3 names, 0 failed; python3 looked up 1 name, 1 failed
"""

from __future__ import annotations

import collections
import socket
import sys

import engine

# glibc's return codes by value, named as Python's socket module names them.
EAI = {
    value: name
    for name in dir(socket)
    if name.startswith("EAI_") and isinstance(value := getattr(socket, name), int)
}

lookups: collections.Counter[str] = collections.Counter()
failures: collections.Counter[str] = collections.Counter()


def say(line: str) -> None:
    print(f"getaddrinfo: {line}", file=sys.stderr, flush=True)


async def on_event(event: engine.Event) -> None:
    data = event.data
    comm, ret = data["comm"], data["ret"]
    lookups[comm] += 1
    failures[comm] += ret != 0
    result = "ok" if ret == 0 else EAI.get(ret, f"error {ret}")
    say(f"{comm} (pid {data['pid']}) {data['host']} -> {result}")


def summary() -> None:
    parts = [
        f"{comm} looked up {n} name{'s' if n != 1 else ''}, {failures[comm]} failed"
        for comm, n in lookups.most_common()
    ]
    say("; ".join(parts) or "no lookups")


def setup(eng: engine.Engine) -> None:
    eng.every(None, summary)  # once, when the engine stops
