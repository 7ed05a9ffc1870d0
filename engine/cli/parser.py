"""The command line's options (``engine run``, ``check``, ``features``), parsed with argparse."""

from __future__ import annotations

import argparse

from engine.cli.metrics import parse_address
from engine.cli.otlp import Endpoint
from engine.netns.priority import ATTACH_NICE, ATTACH_REALTIME
from engine.sources.containerd_api import DEFAULT_SOCKET as CONTAINERD_SOCKET
from engine.sources.docker import DEFAULT_SOCKET as DOCKER_SOCKET
from engine.sources.podman import DEFAULT_SOCKET as PODMAN_SOCKET
from engine.world.selection import ACCEPTED_FORMS

# --attach-priority's choices: open_engine's attach_nice and attach_realtime for each.
ATTACH_PRIORITY_ARGS: dict[str, tuple[int | None, int | None]] = {
    "default": (None, None),
    "raised": (ATTACH_NICE, None),
    "realtime": (None, ATTACH_REALTIME),
}
ATTACH_PRIORITIES = tuple(ATTACH_PRIORITY_ARGS)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _positive_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def _otlp_endpoint(text: str) -> Endpoint:
    try:
        return Endpoint.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _metrics_address(text: str) -> tuple[str, int]:
    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not IP:PORT (for example 127.0.0.1:9464)"
        ) from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="engine", description="Container-aware eBPF tracing with bcc gadgets."
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="load gadgets, attach them and stream their records")
    run.add_argument("gadgets", nargs="+", metavar="GADGET.c")
    run.add_argument(
        "--duration",
        type=_positive_seconds,
        metavar="SECONDS",
        help="stop after this many seconds (counted from when the programs are attached)",
    )
    run.add_argument(
        "--output",
        choices=["json", "table"],
        default=None,
        help="json: one JSON object per line (the default when stdout is not a terminal);"
        " table: a live view per container (the default on a terminal)",
    )
    run.add_argument(
        "--select",
        action="append",
        default=[],
        metavar="EXPR",
        help=f"trace the containers matching EXPR ({ACCEPTED_FORMS}); repeatable",
    )
    run.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="EXPR",
        help="never trace the containers matching EXPR; repeatable",
    )
    run.add_argument(
        "--host", action="store_true", help="also trace the host (implied without --select)"
    )
    run.add_argument(
        "--filter",
        action="append",
        default=[],
        metavar="EXPR",
        help="keep only the events for which EXPR holds: FIELD==VALUE, !=, <, <=, >, >=,"
        " FIELD~REGEX, FIELD!~REGEX on a record field or container.name, container.image,"
        " k8s.namespace, k8s.pod, gadget, source; repeatable (all must hold)",
    )
    run.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="give a gadget parameter (ENGINE_PARAM, listed by `engine check`) a value at"
        " start; GADGET:NAME=VALUE when several gadgets declare NAME; repeatable",
    )
    run.add_argument(
        "--fields",
        metavar="A,B,C",
        help="show only these fields of the events' data, in this order (JSON lines and table)",
    )
    run.add_argument(
        "--sort",
        metavar="FIELD[,FIELD]",
        help="order the table's rows of each gadget map by these fields (-FIELD: descending;"
        " --sort=-FIELD when the first is)",
    )
    run.add_argument(
        "--max-rows",
        type=_positive_count,
        metavar="N",
        help="show at most N rows in each of the table's sections",
    )
    run.add_argument(
        "--hook",
        action="append",
        default=[],
        metavar="FILE.py",
        help="load hooks from a Python file (on_event, on_container_added,"
        " on_container_removed, setup(engine)); repeatable",
    )
    run.add_argument(
        "--metrics",
        type=_metrics_address,
        metavar="ADDR",
        help="serve Prometheus metrics on ADDR, an IP address and port (127.0.0.1:9464)",
    )
    run.add_argument(
        "--otlp",
        type=_otlp_endpoint,
        metavar="ENDPOINT",
        help="export every record as an OpenTelemetry log record and the engine's metrics to"
        " an OTLP collector: HOST[:PORT] or grpc://HOST[:PORT] for gRPC (port 4317),"
        " http://HOST[:PORT] for HTTP (port 4318)",
    )
    run.add_argument(
        "--allow-untrusted-files",
        action="store_true",
        help="run gadget and hook files even when a user other than root could change them",
    )
    run.add_argument(
        "--maps",
        type=_positive_seconds,
        metavar="INTERVAL",
        help="emit the gadgets' hash, array and histogram maps as map records every INTERVAL"
        " seconds and when stopping (by default only gadgets without a ring or perf buffer"
        " emit theirs, when stopping)",
    )
    run.add_argument(
        "--maps-clear",
        action="store_true",
        help="empty each map after it is emitted, so that each map record holds one interval",
    )
    run.add_argument(
        "--docker-socket",
        metavar="PATH",
        help="Docker's API socket (default: as the docker CLI finds it, $DOCKER_HOST or"
        f" {DOCKER_SOCKET})",
    )
    run.add_argument(
        "--containerd-socket",
        metavar="PATH",
        default=CONTAINERD_SOCKET,
        help="containerd's socket (default: %(default)s)",
    )
    run.add_argument(
        "--podman-socket",
        metavar="PATH",
        default=PODMAN_SOCKET,
        help="podman's API service socket (default: %(default)s)",
    )
    run.add_argument(
        "--attach-priority",
        choices=ATTACH_PRIORITIES,
        default="default",
        help="the scheduling priority of the threads on a new netns's attach path: 'default'"
        " (as started), 'raised' (nice -10) or 'realtime' (SCHED_FIFO 1): on a node whose"
        " CPUs are saturated while containers start (docs/cli.md)",
    )
    run.add_argument(
        "--all-or-nothing",
        action="store_true",
        help="stop at the first gadget that fails to compile, load or attach (by default it is"
        " reported as a gadget_failed record and the other gadgets run)",
    )

    check = sub.add_parser("check", help="print the plan of a gadget without loading anything")
    check.add_argument("gadgets", nargs="+", metavar="GADGET.c")
    check.add_argument("--json", action="store_true", help="print a JSON list")

    features = sub.add_parser("features", help="which kinds of program this kernel can run")
    features.add_argument("--json", action="store_true", help="print JSON")
    return parser
