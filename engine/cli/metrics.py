"""Prometheus metrics for ``engine run --metrics ADDR``: text format over a tiny HTTP server.

Counters per map come from the engine's own statistics (so they count every record, also
those no consumer saw); containers, attached netns and attach latency come from the records
the CLI reads. Attach latency is the time from a container's ``container_added`` record to the
first ``attached`` record naming it.
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import trio

from engine.errors import MetricsError

if TYPE_CHECKING:
    from engine.engine import Engine

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
REQUEST_LIMIT = 8192
REQUEST_TIMEOUT = 5.0


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPV6]:PORT`` into (host, port); raises ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (for example 127.0.0.1:9464)")
    host = host.removeprefix("[").removesuffix("]")
    ipaddress.ip_address(host)  # a name would resolve to who knows what: addresses only
    return host, int(port)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


@attrs.define
class Histogram:
    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = attrs.field(init=False)
    total: float = 0.0
    count: int = 0

    def __attrs_post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out, cumulative = [], 0
        for bound, n in zip(self.buckets, self.counts, strict=True):
            cumulative += n
            out.append(f'{name}_bucket{{le="{bound}"}} {cumulative}')
        out += [
            f'{name}_bucket{{le="+Inf"}} {self.count}',
            f"{name}_sum {self.total}",
            f"{name}_count {self.count}",
        ]
        return out


@attrs.define
class Metrics:
    """Everything ``/metrics`` reports; ``observe`` each record, ``render`` on each scrape."""

    engine: Engine | None = None
    clock: Callable[[], float] = time.monotonic
    records: Counter[str] = attrs.Factory(Counter)
    containers: dict[str, float] = attrs.Factory(dict)  # name → when it was added
    awaiting_attach: dict[str, float] = attrs.Factory(dict)
    attachments: Counter[str] = attrs.Factory(Counter)  # netns → live attachments
    latency: Histogram = attrs.Factory(Histogram)
    # Also told each attach latency (the OTLP export's histogram).
    latency_observers: list[Callable[[float], None]] = attrs.Factory(list)

    def observe(self, record: Mapping[str, Any]) -> None:
        kind = str(record.get("type"))
        self.records[kind] += 1
        if kind in ("container_added", "container_removed"):
            container = record.get("container") or {}
            name = str(container.get("name") or container.get("id"))
            if kind == "container_added":
                self.containers[name] = self.awaiting_attach[name] = self.clock()
            else:
                self.containers.pop(name, None)
                self.awaiting_attach.pop(name, None)
        elif kind in ("attached", "detached") and record.get("netns") is not None:
            netns = str(record["netns"])
            self.attachments[netns] += 1 if kind == "attached" else -1
            if self.attachments[netns] <= 0:
                del self.attachments[netns]
            added = self.awaiting_attach.pop(str(record.get("container")), None)
            if kind == "attached" and added is not None:
                seconds = self.clock() - added
                self.latency.observe(seconds)
                for observe in self.latency_observers:
                    observe(seconds)

    def render(self) -> str:
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"])

        maps = {} if self.engine is None else self.engine.stats.maps
        for field, help_text in (
            ("received", "Records read from the kernel buffer."),
            ("delivered", "Records handed to consumers."),
        ):
            family(f"engine_events_{field}_total", "counter", help_text)
            for (gadget, name), stats in sorted(maps.items()):
                labels = _labels({"gadget": gadget, "map": name})
                lines.append(f"engine_events_{field}_total{labels} {getattr(stats, field)}")
        family("engine_events_lost_total", "counter", "Records lost, by where they were lost.")
        for (gadget, name), stats in sorted(maps.items()):
            for where, count in (
                ("kernel", stats.lost_kernel),
                ("engine", stats.lost_engine),
                ("pending", stats.lost_pending),
            ):
                labels = _labels({"gadget": gadget, "map": name, "where": where})
                lines.append(f"engine_events_lost_total{labels} {count}")
        family(
            "engine_events_unselected_total",
            "counter",
            "Records of tasks or netns outside the selection, by where they were dropped.",
        )
        for (gadget, name), stats in sorted(maps.items()):
            for where, count in (
                ("kernel", stats.unselected_kernel),
                ("engine", stats.unselected - stats.unselected_kernel),
            ):
                labels = _labels({"gadget": gadget, "map": name, "where": where})
                lines.append(f"engine_events_unselected_total{labels} {count}")
        hooks = {} if self.engine is None else self.engine.hook_stats
        family("engine_hook_dropped_total", "counter", "Records a slow hook could not take.")
        for hook, hs in sorted(hooks.items()):
            lines.append(f"engine_hook_dropped_total{_labels({'hook': hook})} {hs.dropped}")
        family("engine_hook_failures_total", "counter", "Hook calls that raised.")
        for hook, hs in sorted(hooks.items()):
            lines.append(f"engine_hook_failures_total{_labels({'hook': hook})} {hs.failed}")
        family("engine_records_total", "counter", "Records read by the command, by type.")
        for kind, count in sorted(self.records.items()):
            lines.append(f"engine_records_total{_labels({'type': kind})} {count}")
        family("engine_containers", "gauge", "Containers running now.")
        lines.append(f"engine_containers {len(self.containers)}")
        family("engine_attached_netns", "gauge", "Network namespaces with programs attached.")
        lines.append(f"engine_attached_netns {len(self.attachments)}")
        family(
            "engine_attach_latency_seconds",
            "histogram",
            "From a container's container_added to its first attached record.",
        )
        lines += self.latency.lines("engine_attach_latency_seconds")
        return "\n".join(lines) + "\n"


def _response(status: str, body: str, content_type: str) -> bytes:
    data = body.encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + data


async def _read_request(stream: trio.abc.Stream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data and len(data) < REQUEST_LIMIT:
        chunk = await stream.receive_some(REQUEST_LIMIT)
        if not chunk:
            break
        data += chunk
    return data


async def _handle(metrics: Metrics, stream: trio.SocketStream) -> None:
    async with stream:
        with trio.move_on_after(REQUEST_TIMEOUT):
            request = await _read_request(stream)
            method, _, rest = request.partition(b" ")
            path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
            if method == b"GET" and path in (b"/metrics", b"/"):
                reply = _response(
                    "200 OK", metrics.render(), "text/plain; version=0.0.4; charset=utf-8"
                )
            else:
                reply = _response("404 Not Found", "not found\n", "text/plain")
            try:
                await stream.send_all(reply)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                log.debug("metrics client went away")


async def serve_metrics(
    metrics: Metrics,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``/metrics`` on host:port until cancelled; reports the bound (host, port)."""
    async with trio.open_nursery() as nursery:
        try:
            listeners: list[trio.SocketListener] = await nursery.start(
                functools.partial(
                    trio.serve_tcp, functools.partial(_handle, metrics), port, host=host
                )
            )
        except OSError as exc:
            raise MetricsError(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from exc
        bound = listeners[0].socket.getsockname()
        task_status.started((str(bound[0]), int(bound[1])))
