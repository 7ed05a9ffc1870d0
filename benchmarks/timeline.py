"""What the engine's records (and Docker's start events) said happened to each container of a
churn run (benchmarks/churn.py, benchmarks/leaks.py), and the figures made from them.

All times are wall-clock seconds on this machine (Docker reports ``timeNano``), taken when a
record reaches the benchmark's consumer, so they include the engine's delivery.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import trio

from benchmarks.host_watch import HostTimes
from engine.engine import Engine

# Iterators run on a timer and have no "attached" record; these three are what "attached" means.
PROGRAMS = frozenset({"seen_by_socket", "tc_in", "tc_out"})
CLASSIFIERS = ("tc_in", "tc_out")  # one filter each on the host-side veth
SEEN_BY_SOCKET, SEEN_BY_TC = 0, 1  # as in the gadget


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)) - 1, 0)]


def summary(values: Sequence[float]) -> dict[str, float]:
    """How many, and their p50, p99 and max in milliseconds."""
    return {
        "n": len(values),
        "p50_ms": 1000 * percentile(values, 50),
        "p99_ms": 1000 * percentile(values, 99),
        "max_ms": 1000 * max(values, default=0.0),
    }


@attrs.define
class Timeline:
    """When things happened, per netns and per container name (wall clock)."""

    netns_added: dict[int, float] = attrs.Factory(dict)
    attached: dict[int, dict[str, float]] = attrs.Factory(lambda: defaultdict(dict))
    detached: dict[int, set[str]] = attrs.Factory(lambda: defaultdict(set))
    netns_of: dict[str, int] = attrs.Factory(dict)  # container name -> netns inode
    started: dict[str, float] = attrs.Factory(dict)  # container name -> docker start event
    echoes: set[tuple[str, int]] = attrs.Factory(set)  # (source address, seen_by)
    # The same, for the records that came out named with their container.
    named_echoes: set[tuple[str, int]] = attrs.Factory(set)
    # For the per-container details (``--details``): when the engine reported each container,
    # when each echo record arrived (first one) and whether it was named, what each netns's
    # attach records said, and the engine's lost records.
    # container name -> container_added: when, and the netns it names
    reported: dict[str, tuple[float, int | None]] = attrs.Factory(dict)
    echo_at: dict[tuple[str, int], tuple[float, bool]] = attrs.Factory(dict)
    attach_records: dict[int, list[dict[str, Any]]] = attrs.Factory(lambda: defaultdict(list))
    lost: list[dict[str, Any]] = attrs.Factory(list)
    netns_paths: dict[int, str] = attrs.Factory(dict)  # inode -> the path netns_added gave
    _changed: trio.Event = attrs.Factory(trio.Event)

    async def until(self, check: Callable[[], bool], seconds: float) -> bool:
        """Whether ``check()`` became true, re-checked on each engine record, within seconds."""
        with trio.move_on_after(seconds):
            while not check():
                await self._changed.wait()
            return True
        return False

    def note(self, record: dict[str, Any], at: float) -> None:
        self._changed.set()
        self._changed = trio.Event()
        kind = record.get("type")
        if kind == "netns_added":
            self.netns_added.setdefault(record["netns"], at)
            self.netns_paths.setdefault(record["netns"], record["path"])
        elif kind == "container_added":
            container = record["container"]
            self.reported.setdefault(container["name"], (at, container.get("netns")))
        elif kind == "lost":
            self.lost.append({**record, "at": at})
        elif kind == "attached" and record.get("netns") is not None:
            appeared = self.netns_added.get(record["netns"])
            arrived = at
            if record.get("speculative") and appeared is not None:
                at = appeared + record["latency"]  # held until identified: when it happened
            self.attached[record["netns"]].setdefault(record["program"], at)
            self.attach_records[record["netns"]].append(
                {
                    "program": record["program"],
                    "at": at,
                    "arrived": arrived,
                    "speculative": record.get("speculative"),
                    "container": record.get("container"),
                    "interface": record.get("interface"),
                }
            )
            if record.get("container"):
                self.netns_of[record["container"]] = record["netns"]
        elif kind == "detached" and record.get("netns") is not None:
            self.detached[record["netns"]].add(record["program"])
        elif kind == "event" and record.get("source") == "echoes":
            echo = (record["data"]["saddr"], record["data"]["seen_by"])
            self.echoes.add(echo)
            self.echo_at.setdefault(echo, (at, bool(record.get("container"))))
            if record.get("container"):
                self.named_echoes.add(echo)

    def attached_at(self, name: str) -> float | None:
        """When the last program was attached in the container's netns, once all are."""
        netns = self.netns_of.get(name)
        if netns is None:
            return None
        done = self.attached.get(netns, {})
        return max(done.values()) if done.keys() >= PROGRAMS else None

    def all_attached(self, names: Sequence[str]) -> bool:
        return all(self.attached_at(n) is not None for n in names)

    def all_detached(self, names: Sequence[str]) -> bool:
        return all(self.detached.get(self.netns_of.get(n, -1), set()) >= PROGRAMS for n in names)


async def follow(engine: Engine, timeline: Timeline) -> None:
    async for record in engine.events():
        timeline.note(record.to_json(), time.time())


def host_latencies(timeline: Timeline, host: HostTimes, names: Sequence[str]) -> dict[str, Any]:
    """Attach latencies against what the host showed (benchmarks/host_watch.py), from when
    the netns file was made: the socket filter (its record), the classifiers' filters added
    (tc messages: pre-attached ones are in place before their record, which comes at
    hand-over) and every program in place; the classifiers also after the host-side veth was
    put on the bridge (they cannot come sooner), and Docker's own time between the two; the
    socket filter also after the netns was mounted on its file (it cannot come sooner), and
    Docker's time from making the file to mounting the netns on it."""
    socket, tc, both, tc_bridge, docker_veth = [], [], [], [], []
    socket_mounted, docker_mount = [], []
    for name in names:
        netns = timeline.netns_of.get(name)
        records = timeline.attach_records.get(netns or 0, [])
        path = timeline.netns_paths.get(netns or 0, "")
        made, mounted = host.netns_files.get(path), host.netns_mounted.get(path)
        sock = next((r["at"] for r in records if r["program"] == "seen_by_socket"), None)
        if mounted is not None and sock is not None:
            socket_mounted.append(sock - mounted)
        if mounted is not None and made is not None:
            docker_mount.append(mounted - made)
        interface = next((r["interface"] for r in records if r["interface"]), None)
        filters = host.filters_added(interface or "", len(CLASSIFIERS))
        bridged = host.on_bridge.get(interface or "")
        if made is not None and sock is not None:
            socket.append(sock - made)
        if made is not None and filters is not None:
            tc.append(filters - made)
            if sock is not None:
                both.append(max(sock, filters) - made)
        if bridged is not None and filters is not None:
            tc_bridge.append(filters - bridged)
        if bridged is not None and made is not None:
            docker_veth.append(bridged - made)
    return {
        "socket_attach_after_netns_file": summary(socket),
        "tc_filters_after_netns_file": summary(tc),
        "all_in_place_after_netns_file": summary(both),
        "tc_filters_after_veth_on_bridge": summary(tc_bridge),
        "netns_file_to_veth_on_bridge": summary(docker_veth),
        "socket_attach_after_netns_mounted": summary(socket_mounted),
        "netns_file_to_mounted": summary(docker_mount),
    }


def per_container(
    timeline: Timeline, host: HostTimes, names: Sequence[str], addresses: dict[str, str]
) -> list[dict[str, Any]]:
    """What the records said about each container, in ms after its netns appeared: Docker's
    start event, the engine's ``container_added``, each attach record (when it happened and
    when it arrived), when each first echo record arrived and whether it was named; and from
    the host, when the netns file was made and the netns mounted on it, the host-side veth
    put on the bridge and its filters added."""
    rows = []
    for name in names:
        reported = timeline.reported.get(name)
        netns = timeline.netns_of.get(name) or (reported[1] if reported else None)
        appeared = timeline.netns_added.get(netns) if netns is not None else None

        def ms(at: float | None, appeared: float | None = appeared) -> float | None:
            return None if at is None or appeared is None else round(1000 * (at - appeared), 1)

        address = addresses.get(name)
        path = timeline.netns_paths.get(netns or 0, "")
        row: dict[str, Any] = {
            "name": name,
            "netns": netns,
            "address": address,
            "docker_start_ms": ms(timeline.started.get(name)),
            "reported_ms": ms(reported[0] if reported else None),
            "netns_file_ms": ms(host.netns_files.get(path)),
            "netns_mounted_ms": ms(host.netns_mounted.get(path)),
            "attached": [
                {**r, "at": ms(r["at"]), "arrived": ms(r["arrived"])}
                for r in timeline.attach_records.get(netns or 0, [])
            ],
        }
        interface = next((r["interface"] for r in row["attached"] if r["interface"]), None)
        row["veth_on_bridge_ms"] = ms(host.on_bridge.get(interface or ""))
        row["tc_filters_ms"] = ms(host.filters_added(interface or "", len(CLASSIFIERS)))
        for where, code in (("socket", SEEN_BY_SOCKET), ("tc", SEEN_BY_TC)):
            seen = timeline.echo_at.get((address or "", code))
            row[where] = None if seen is None else {"arrived_ms": ms(seen[0]), "named": seen[1]}
        rows.append(row)
    return rows


def first_packets(timeline: Timeline, addresses: dict[str, str], count: int) -> dict[str, Any]:
    """Of ``count`` containers: how many had their ping seen by the socket filter, TC, both."""
    seen = {
        where: sum((address, code) in timeline.echoes for address in addresses.values())
        for where, code in (("socket", SEEN_BY_SOCKET), ("tc", SEEN_BY_TC))
    }

    def both(echoes: set[tuple[str, int]]) -> int:
        return sum({(a, SEEN_BY_SOCKET), (a, SEEN_BY_TC)} <= echoes for a in addresses.values())

    return {
        "containers": count,
        "with_address": len(addresses),
        **seen,
        "both": both(timeline.echoes),
        "both_named": both(timeline.named_echoes),
    }
