"""(1) Attach latency under container churn (leaks over start/stop cycles: benchmarks/leaks.py).

(1) Containers are started at a fixed rate (1 and 5 per second, and as fast as the daemon
starts them: ``MAX_RATE``) while the engine runs the per-netns gadget ``gadgets/per_netns.c``
selected on them. For each container, from the engine's own record stream: when its netns
appeared (``netns_added``) and when the last of the gadget's per-netns programs was attached in
it (``attached``: for an attachment made before the container was identified,
``"speculative": true``, the record is held until then, so the time is the netns's appearance
plus the record's ``latency``); from Docker's event stream: its ``start`` event. Latency from
the netns and from the start event, p50/p99/max; the baseline in the same run is Docker's
start event → netns appearance. From the host's own clock (benchmarks/host_watch.py): when the
netns file was made and the netns mounted on it, the veth put on the bridge and its filters
added, against the records (``timeline.host_latencies``). All times are wall-clock seconds on
this machine (Docker reports ``timeNano``), taken when a record reaches the benchmark's
consumer, so they include the engine's delivery.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from benchmarks import containers, cpu_share, host_watch
from benchmarks.results import Figure, Report
from benchmarks.timeline import (
    Timeline,
    first_packets,
    follow,
    host_latencies,
    per_container,
    summary,
)
from engine.engine import open_engine
from engine.netns.priority import ATTACH_REALTIME

GADGET = Path(__file__).with_name("gadgets") / "per_netns.c"
ATTACH_TIMEOUT = 60.0
ECHO_WAIT = 1.0  # seconds for the last pings' records to arrive once everything is attached


# Asked of the daemon when measuring its maximum: far beyond what it starts here (about five a
# second); the starts then run as concurrently as the thread pool allows, and the rate achieved
# is the daemon's maximum.
MAX_RATE = "100"
RT = "realtime"  # the details of a run with the attach path real-time


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
    """Start the containers at ``rate``; each pings the bridge once as it starts. From a
    process of its own (benchmarks/docker_starts.py), not this one's threads: this process
    is the engine's."""
    command = ("sh", "-c", f"ping -c 1 -W 1 {gateway} >/dev/null; exec sleep 3600")
    starter = [sys.executable, "-m", "benchmarks.docker_starts", f"{rate:g}", *names, "--"]
    await trio.run_process([*starter, *command], cwd=host_watch.ROOT)


@contextmanager
def _docker_start_events() -> Iterator[Any]:
    """Docker's stream of container start events, closed on the way out (after an error
    too): that ends the thread reading it."""
    import docker  # the SDK the engine uses too; imported here: only the churn needs it here

    client = docker.from_env()
    stream = client.events(decode=True, filters={"type": "container", "event": "start"})
    try:
        yield stream
    finally:
        stream.close()
        client.close()


async def _churn(
    rates: Sequence[float],
    count: int,
    timeline: Timeline,
    details: bool = False,
    realtime: bool = False,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    gateway = await trio.to_thread.run_sync(_gateway)
    selection = [f"name={containers.PREFIX}churn-*"]
    # The benchmark's trio thread is the engine's: real-time with it (attach_realtime).
    priority = ATTACH_REALTIME if realtime else None
    with _docker_start_events() as stream, host_watch.watching() as host:
        async with (
            open_engine(GADGET, select=selection, attach_realtime=priority) as engine,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(follow, engine, timeline)
            nursery.start_soon(
                lambda: trio.to_thread.run_sync(
                    _docker_starts, timeline, stream, abandon_on_cancel=True
                )
            )
            for rate in rates:
                out[f"{rate:g}"] = await _one_rate(
                    rate, count, timeline, host, gateway, details=details
                )
            nursery.cancel_scope.cancel()
    return out


async def _one_rate(
    rate: float,
    count: int,
    timeline: Timeline,
    host: host_watch.HostTimes,
    gateway: str,
    *,
    details: bool,
) -> dict[str, Any]:
    """``count`` containers started at ``rate`` and removed: what the records and the host
    said about them."""
    names = [f"{containers.PREFIX}churn-{rate:g}-{i}" for i in range(count)]
    cpu_before = await trio.to_thread.run_sync(cpu_share.snapshot)
    try:
        await _start_at_rate(names, rate, gateway)
        complete = await timeline.until(
            functools.partial(timeline.all_attached, names), ATTACH_TIMEOUT
        )
        await trio.sleep(ECHO_WAIT)
        cpu_after = await trio.to_thread.run_sync(cpu_share.snapshot)
        addresses = await trio.to_thread.run_sync(_addresses, names)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(containers.remove, list(names))
    await timeline.until(functools.partial(timeline.all_detached, names), ATTACH_TIMEOUT)
    found = {
        **_latencies(timeline, names, complete),
        **host_latencies(timeline, host, names),
        "first_packet": first_packets(timeline, addresses, len(names)),
        "cpu": cpu_share.used(cpu_before, cpu_after),
        "lost": list(timeline.lost),
    }
    if details:
        found["per_container"] = per_container(timeline, host, names, addresses)
    return found


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

    return {
        "containers": len(names),
        "all_attached": complete,
        "achieved_starts_per_s": achieved,
        "attach_after_netns": summary(from_netns),
        "attach_after_docker_start": summary(from_start),
        "docker_start_to_netns": summary(start_to_netns),
    }


def measure_churn(
    rates: Sequence[float], count: int, *, per_container: bool = False, realtime: bool = False
) -> tuple[list[Figure], dict[str, Any]]:
    """The figures at each rate; ``realtime``: with the engine's attach path real-time
    (``attach_realtime``), the figures' names saying so and its details under ``RT``."""
    details = trio.run(_churn, rates, count, Timeline(), per_container, realtime)
    figures = [f for rate, d in details.items() for f in _rate_figures(rate, d)]
    if realtime:
        figures = [
            attrs.evolve(f, name=f.name.replace("/s", "/s, attach path real-time", 1))
            for f in figures
        ]
        details = {f"{rate} {RT}": d for rate, d in details.items()}
    return figures, details


def _rate_figures(rate: str, d: dict[str, Any]) -> list[Figure]:
    """One rate's figures: from the records, first packets, from the host's clock, and from
    Docker's start event."""
    netns, start, base = (
        d["attach_after_netns"],
        d["attach_after_docker_start"],
        d["docker_start_to_netns"],
    )
    cpu = d["cpu"]
    note = (
        f"{d['containers']} containers, achieved {d['achieved_starts_per_s']:.1f}/s; CPU over "
        f"{cpu['wall_s']:.1f} s: engine process {cpu['engine_process_s']:.1f} s, Docker "
        f"{cpu['docker_s']:.1f} s, machine {cpu['machine_busy_s']:.1f} of "
        f"{cpu['cpus'] * cpu['wall_s']:.1f} s"
    )
    if not d["all_attached"]:
        note += ", NOT all attached"
    return [
        # From the records, as before: a pre-attached classifier's `attached` comes when it is
        # handed to the netns's task, once Docker has moved the veth in (docs/events.md); the
        # figures from the host's clock below say when it was added.
        Figure(
            f"attach p99 after netns appears (records; TC at hand-over), {rate}/s",
            netns["p99_ms"],
            "ms",
            note=f"{note}; p50 {netns['p50_ms']:.1f}, max {netns['max_ms']:.1f}",
        ),
        *_first_packet_figures(rate, d["first_packet"]),
        *_host_figures(rate, d),
        Figure(
            f"attach p99 after Docker start event, {rate}/s",
            start["p99_ms"],
            "ms",
            note=f"p50 {start['p50_ms']:.1f}, max {start['max_ms']:.1f}; the netns appeared "
            f"{-base['p50_ms']:.0f} ms (p50) before the start event",
        ),
    ]


def _first_packet_figures(rate: str, first: dict[str, Any]) -> list[Figure]:
    rows = (
        (
            "both",
            "first-packet capture (socket and TC)",
            f"socket {first['socket']}, TC {first['tc']} of {first['containers']}",
        ),
        ("both_named", "first packet seen and named with its container (socket and TC)", ""),
    )
    return [
        Figure(
            f"{label}, {rate}/s",
            100 * first[key] / first["containers"],
            "%",
            target="≥ 99%",
            met=first[key] >= 0.99 * first["containers"],
            note=detail,
        )
        for key, label, detail in rows
    ]


def _host_figures(rate: str, d: dict[str, Any]) -> list[Figure]:
    """The figures from the host's clock (benchmarks/host_watch.py)."""
    mounted, bridged = d["netns_file_to_mounted"], d["netns_file_to_veth_on_bridge"]
    rows = (
        (
            "all_in_place_after_netns_file",
            "all programs in place p99 after the netns file is made (host's clock)",
            "; TC: when its filters were added (tc messages)",
            # Asked for more than the daemon can start: this is its maximum rate.
            rate == MAX_RATE,
        ),
        (
            "socket_attach_after_netns_file",
            "socket attach p99 after the netns file is made (host's clock)",
            "",
            False,
        ),
        (
            "socket_attach_after_netns_mounted",
            "socket attach p99 after the netns is mounted on its file (host's clock)",
            f"; Docker mounted it {mounted['p50_ms']:.1f} ms (p50, p99 {mounted['p99_ms']:.1f})"
            " after making the file",
            False,
        ),
        (
            "tc_filters_after_veth_on_bridge",
            "TC filters added p99 after the host veth is on the bridge (host's clock)",
            f"; Docker put it there {-bridged['p50_ms']:.0f} ms (p50) before making the netns file",
            False,
        ),
    )
    return [
        Figure(
            f"{label}, {rate}/s",
            d[key]["p99_ms"],
            "ms",
            target="≤ 50 ms at the daemon's maximum" if at_max else "",
            met=d[key]["p99_ms"] <= 50 and d[key]["n"] == d["containers"] if at_max else None,
            note=f"n {d[key]['n']}, p50 {d[key]['p50_ms']:.1f}, max {d[key]['max_ms']:.1f}{more}",
        )
        for key, label, more, at_max in rows
    ]


def main() -> int:
    """``python -m benchmarks.churn [--rates 100] [--count 100] [--details FILE]``: the Docker
    churn alone, at the rates given (100: the daemon's maximum), each in an engine of its own
    as ``python -m benchmarks`` runs them; ``--details`` writes every container's timeline."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.churn")
    parser.add_argument("--rates", default=MAX_RATE)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--details", type=Path)
    parser.add_argument("--realtime", action="store_true", help="the attach path real-time")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    report = Report(smoke=False)
    for rate in (float(r) for r in args.rates.split(",")):
        figures, details = measure_churn(
            [rate], args.count, per_container=bool(args.details), realtime=args.realtime
        )
        report.figures += figures
        report.details.update(details)
    if args.details:
        args.details.write_text(json.dumps(report.details, indent=1))
    sys.stdout.write(report.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
