"""(1) Attach latency under container churn (leaks over start/stop cycles: benchmarks/leaks.py).

(1) Containers are started at a fixed rate (1, 5, 20 per second) while the engine runs the
per-netns gadget ``gadgets/per_netns.c`` selected on them. For each container, from the
engine's own record stream: when its netns appeared (``netns_added``) and when the last of the
gadget's per-netns programs was attached in it (``attached``: for an attachment made before the
container was identified, ``"speculative": true``, the record is held until then, so the time
is the netns's appearance plus the record's ``latency``); from Docker's event stream: its
``start`` event. Latency from the netns and from the start event, p50/p99/max; the baseline in
the same run is Docker's start event → netns appearance. All times are wall-clock seconds on
this machine (Docker reports ``timeNano``), taken when a record reaches the benchmark's
consumer, so they include the engine's delivery.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from benchmarks import containers, cpu_share
from benchmarks.results import Figure, Report
from engine.engine import Engine, open_engine

GADGET = Path(__file__).with_name("gadgets") / "per_netns.c"
# Iterators run on a timer and have no "attached" record; these three are what "attached" means.
PROGRAMS = frozenset({"seen_by_socket", "tc_in", "tc_out"})
ATTACH_TIMEOUT = 60.0
ECHO_WAIT = 1.0  # seconds for the last pings' records to arrive once everything is attached
SEEN_BY_SOCKET, SEEN_BY_TC = 0, 1  # as in the gadget


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)) - 1, 0)]


# Asked of the daemon when measuring its maximum: far beyond what it starts here (about five a
# second); the starts then run as concurrently as the thread pool allows, and the rate achieved
# is the daemon's maximum.
MAX_RATE = "100"


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


def _docker_starts(timeline: Timeline, stream: Any) -> None:
    for event in stream:
        name = event.get("Actor", {}).get("Attributes", {}).get("name", "")
        if name.startswith(containers.PREFIX):
            timeline.started[name] = event["timeNano"] / 1e9


def _gateway() -> str:
    return subprocess.run(
        ["docker", "network", "inspect", "bridge", "-f", "{{(index .IPAM.Config 0).Gateway}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def _addresses(names: Sequence[str]) -> dict[str, str]:
    shown = subprocess.run(
        ["docker", "inspect", "-f", "{{.Name}} {{.NetworkSettings.IPAddress}}", *names],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    pairs = (line.split() for line in shown.splitlines())
    return {p[0].lstrip("/"): p[1] for p in pairs if len(p) == 2}


async def _start_at_rate(names: Sequence[str], rate: float, gateway: str) -> None:
    """Start the containers at ``rate``; each pings the bridge once as it starts."""
    command = ("sh", "-c", f"ping -c 1 -W 1 {gateway} >/dev/null; exec sleep 3600")
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        for i, name in enumerate(names):
            await trio.sleep_until(t0 + i / rate)
            nursery.start_soon(trio.to_thread.run_sync, containers.start, name, *command)


def per_container(
    timeline: Timeline, names: Sequence[str], addresses: dict[str, str]
) -> list[dict[str, Any]]:
    """What the records said about each container, in ms after its netns appeared: Docker's
    start event, the engine's ``container_added``, each attach record (when it happened and
    when it arrived), and when each first echo record arrived and whether it was named."""
    rows = []
    for name in names:
        reported = timeline.reported.get(name)
        netns = timeline.netns_of.get(name) or (reported[1] if reported else None)
        appeared = timeline.netns_added.get(netns) if netns is not None else None

        def ms(at: float | None, appeared: float | None = appeared) -> float | None:
            return None if at is None or appeared is None else round(1000 * (at - appeared), 1)

        address = addresses.get(name)
        row: dict[str, Any] = {
            "name": name,
            "netns": netns,
            "address": address,
            "docker_start_ms": ms(timeline.started.get(name)),
            "reported_ms": ms(reported[0] if reported else None),
            "attached": [
                {**r, "at": ms(r["at"]), "arrived": ms(r["arrived"])}
                for r in timeline.attach_records.get(netns or 0, [])
            ],
        }
        for where, code in (("socket", SEEN_BY_SOCKET), ("tc", SEEN_BY_TC)):
            seen = timeline.echo_at.get((address or "", code))
            row[where] = None if seen is None else {"arrived_ms": ms(seen[0]), "named": seen[1]}
        rows.append(row)
    return rows


async def _churn(
    rates: Sequence[float], count: int, timeline: Timeline, details: bool = False
) -> dict[str, Any]:
    import docker  # the SDK the engine uses too; imported here: only the churn needs it here

    client = docker.from_env()
    stream = client.events(decode=True, filters={"type": "container", "event": "start"})
    out: dict[str, Any] = {}
    gateway = await trio.to_thread.run_sync(_gateway)
    selection = [f"name={containers.PREFIX}churn-*"]
    async with open_engine(GADGET, select=selection) as engine, trio.open_nursery() as nursery:
        nursery.start_soon(follow, engine, timeline)
        nursery.start_soon(
            lambda: trio.to_thread.run_sync(
                _docker_starts, timeline, stream, abandon_on_cancel=True
            )
        )
        for rate in rates:
            names = [f"{containers.PREFIX}churn-{rate:g}-{i}" for i in range(count)]
            cpu_before = await trio.to_thread.run_sync(cpu_share.snapshot)
            try:
                await _start_at_rate(names, rate, gateway)
                complete = await timeline.until(
                    functools.partial(timeline.all_attached, names), ATTACH_TIMEOUT
                )
                await trio.sleep(ECHO_WAIT)
                cpu = cpu_share.used(cpu_before, await trio.to_thread.run_sync(cpu_share.snapshot))
                addresses = await trio.to_thread.run_sync(_addresses, names)
            finally:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(containers.remove, list(names))
            await timeline.until(functools.partial(timeline.all_detached, names), ATTACH_TIMEOUT)
            out[f"{rate:g}"] = {
                **_latencies(timeline, names, complete),
                "first_packet": _first_packets(timeline, addresses, len(names)),
                "cpu": cpu,
                "lost": list(timeline.lost),
                **({"per_container": per_container(timeline, names, addresses)} if details else {}),
            }
        stream.close()
        nursery.cancel_scope.cancel()
    return out


def _first_packets(timeline: Timeline, addresses: dict[str, str], count: int) -> dict[str, Any]:
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


def _latencies(timeline: Timeline, names: Sequence[str], complete: bool) -> dict[str, Any]:
    from_netns, from_start, start_to_netns = [], [], []
    for name in names:
        attached = timeline.attached_at(name)
        netns = timeline.netns_of.get(name)
        appeared = timeline.netns_added.get(netns) if netns is not None else None
        started = timeline.started.get(name)
        if attached is not None and appeared is not None:
            from_netns.append(attached - appeared)
        if attached is not None and started is not None:
            from_start.append(attached - started)
        if appeared is not None and started is not None:
            start_to_netns.append(appeared - started)
    starts = sorted(t for n, t in timeline.started.items() if n in set(names))
    achieved = (len(starts) - 1) / (starts[-1] - starts[0]) if len(starts) > 1 else 0.0

    def summary(values: list[float]) -> dict[str, float]:
        return {
            "n": len(values),
            "p50_ms": 1000 * percentile(values, 50),
            "p99_ms": 1000 * percentile(values, 99),
            "max_ms": 1000 * max(values, default=0.0),
        }

    return {
        "containers": len(names),
        "all_attached": complete,
        "achieved_starts_per_s": achieved,
        "attach_after_netns": summary(from_netns),
        "attach_after_docker_start": summary(from_start),
        "docker_start_to_netns": summary(start_to_netns),
    }


def measure_churn(
    rates: Sequence[float], count: int, *, per_container: bool = False
) -> tuple[list[Figure], dict[str, Any]]:
    details = trio.run(_churn, rates, count, Timeline(), per_container)
    figures: list[Figure] = []
    for rate, d in details.items():
        netns, start, base = (
            d["attach_after_netns"],
            d["attach_after_docker_start"],
            d["docker_start_to_netns"],
        )
        first = d["first_packet"]
        cpu = d["cpu"]
        note = (
            f"{d['containers']} containers, achieved {d['achieved_starts_per_s']:.1f}/s; CPU over "
            f"{cpu['wall_s']:.1f} s: engine process {cpu['engine_process_s']:.1f} s, Docker "
            f"{cpu['docker_s']:.1f} s, machine {cpu['machine_busy_s']:.1f} of "
            f"{cpu['cpus'] * cpu['wall_s']:.1f} s"
        )
        if not d["all_attached"]:
            note += ", NOT all attached"
        figures += [
            Figure(
                f"attach p99 after netns appears, {rate}/s",
                netns["p99_ms"],
                "ms",
                # Asked for more than the daemon can start: this is its maximum rate.
                target="≤ 50 ms at the daemon's maximum" if rate == MAX_RATE else "",
                met=netns["p99_ms"] <= 50 and d["all_attached"] if rate == MAX_RATE else None,
                note=f"{note}; p50 {netns['p50_ms']:.1f}, max {netns['max_ms']:.1f}",
            ),
            *(
                Figure(
                    f"{label}, {rate}/s",
                    100 * first[key] / first["containers"],
                    "%",
                    target="≥ 99%",
                    met=first[key] >= 0.99 * first["containers"],
                    note=note,
                )
                for key, label, note in (
                    (
                        "both",
                        "first-packet capture (socket and TC)",
                        f"socket {first['socket']}, TC {first['tc']} of {first['containers']}",
                    ),
                    (
                        "both_named",
                        "first packet seen and named with its container (socket and TC)",
                        "",
                    ),
                )
            ),
            Figure(
                f"attach p99 after Docker start event, {rate}/s",
                start["p99_ms"],
                "ms",
                note=f"p50 {start['p50_ms']:.1f}, max {start['max_ms']:.1f}; the netns appeared "
                f"{-base['p50_ms']:.0f} ms (p50) before the start event",
            ),
        ]
    return figures, details


def main() -> int:
    """``python -m benchmarks.churn [--rates 100] [--count 100] [--details FILE]``: the Docker
    churn alone, at the rates given (100: the daemon's maximum), each in an engine of its own
    as ``python -m benchmarks`` runs them; ``--details`` writes every container's timeline."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.churn")
    parser.add_argument("--rates", default=MAX_RATE)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--details", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    report = Report(smoke=False)
    for rate in (float(r) for r in args.rates.split(",")):
        figures, details = measure_churn([rate], args.count, per_container=bool(args.details))
        report.figures += figures
        report.details.update(details)
    if args.details:
        args.details.write_text(json.dumps(report.details, indent=1))
    sys.stdout.write(report.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
