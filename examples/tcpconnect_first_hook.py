"""Hook for tcpconnect.c that follows container churn: each traced container's first outgoing
TCP connection, and how long after the engine saw the container it came.

    engine run examples/tcpconnect.c --hook examples/tcpconnect_first_hook.py [--select ...]

One line on stderr per container (stdout stays the engine's own output):

    first-connect: web (nginx:1.27) curl -> 172.17.0.4:8080 established 1.21s after start
    first-connect: batch (busybox) stopped after 30.02s without connecting

Container hooks hear of every container, so the engine's current selection is checked here.
Containers already running when the engine starts count from then; a container that stops and
is started again is followed anew.
"""

from __future__ import annotations

import sys

import trio

import engine


def say(line: str) -> None:
    print(f"first-connect: {line}", file=sys.stderr, flush=True)


def setup(eng: engine.Engine) -> None:
    # Traced containers not yet seen connecting: id -> (name, image, when the engine saw it).
    waiting: dict[str, tuple[str, str, float]] = {}

    @eng.on_container_added
    async def container_added(container: engine.Container) -> None:
        if eng.selection.matches(container):
            waiting[container.id] = (container.name, container.image, trio.current_time())

    @eng.on_container_removed
    async def container_removed(container: engine.Container) -> None:
        if container.id in waiting:
            name, image, since = waiting.pop(container.id)
            elapsed = trio.current_time() - since
            say(f"{name} ({image}) stopped after {elapsed:.2f}s without connecting")

    @eng.on_event("connections")
    async def first_connection(event: engine.Event) -> None:
        if event.container is None or event.container["id"] not in waiting:
            return
        name, image, since = waiting.pop(event.container["id"])
        data = event.data
        to = f"[{data['daddr6']}]" if data["family"] == 10 else data["daddr"]
        say(
            f"{name} ({image}) {data['comm']} -> {to}:{data['dport']} {data['result']}"
            f" {trio.current_time() - since:.2f}s after start"
        )
