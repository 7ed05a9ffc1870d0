"""``engine run --otlp ENDPOINT``: every record as an OpenTelemetry log record, the engine's
counters as OpenTelemetry metrics, sent to a collector with the SDK's OTLP exporters.

Nothing here blocks the trio thread: a record becomes a log record appended to the SDK's
batch processor's bounded queue, which its own thread drains into the exporter; metrics are
read by the periodic reader's thread from the engine's statistics. When the collector is slow
or down, the exporter retries each batch with backoff while the queue fills; what the full
queue refuses, and the batches the collector never took, are counted (``dropped``); the
collector going away and coming back is logged once each (the exporters' own log lines, one
or two per retry, are left out).
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import attrs
import trio

from engine.cli.metrics import Metrics

log = logging.getLogger(__name__)

GRPC_PORT, HTTP_PORT = 4317, 4318
QUEUE = 8192  # log records waiting for the exporter's thread before they are dropped
EXPORT_TIMEOUT = 5.0  # seconds one batch may take, retries included
SHUTDOWN_SECONDS = 5.0
_EXPORTER_LOGGER = "opentelemetry.exporter.otlp.proto"
_MAX_INT = 2**63 - 1


@attrs.frozen
class Endpoint:
    """Where the collector listens: ``host:port`` or ``grpc://host[:4317]`` for gRPC,
    ``http(s)://host[:4318]`` for OTLP over HTTP (protobuf)."""

    protocol: str  # "grpc" or "http"
    url: str

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """Raises ValueError naming ``text`` and what is wrong with it."""
        url = text if "://" in text else f"grpc://{text}"
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"{text!r} has a port that is not a number up to 65535") from None
        if parts.scheme not in ("grpc", "http", "https") or not parts.hostname:
            raise ValueError(f"{text!r} is not HOST:PORT, grpc://HOST:PORT or http://HOST:PORT")
        if parts.path not in ("", "/") or parts.query:
            raise ValueError(f"{text!r} has a path: give the collector's address only")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        if parts.scheme == "grpc":
            return cls("grpc", f"{host}:{port or GRPC_PORT}")
        return cls("http", f"{parts.scheme}://{host}:{port or HTTP_PORT}")


@attrs.define(eq=False)
class _Watched:
    """An exporter that says when the collector goes away and when it is back."""

    inner: Any
    what: str
    where: str
    down: bool = False
    taken: int = 0  # records handed to the exporter (written by the exporting thread only)
    lost: int = 0  # of those, in batches the collector never took

    def export(self, batch: Any, *args: Any, **kwargs: Any) -> Any:
        # Log records come as a list of them, metrics as one MetricsData: not counted.
        count = len(batch) if isinstance(batch, Sequence) else 0
        self.taken += count
        result = self.inner.export(batch, *args, **kwargs)
        failed = getattr(result, "name", "") == "FAILURE"
        if failed:
            self.lost += count
        if failed and not self.down:
            log.warning(
                "OTLP collector %s does not take %s; retrying each batch (records wait in a"
                " queue of %d, then are dropped and counted)",
                self.where,
                self.what,
                QUEUE,
            )
        elif not failed and self.down:
            log.warning("OTLP collector %s takes %s again", self.where, self.what)
        self.down = failed
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@attrs.define(eq=False)
class OtlpExport:
    endpoint: Endpoint
    metrics: Metrics
    _logs: Any
    _meters: Any
    _logger: Any
    _exporting: _Watched
    emitted: int = 0
    refused: int = 0  # records the full queue had no room for

    @classmethod
    def start(cls, endpoint: Endpoint, metrics: Metrics) -> OtlpExport:
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource

        log_exporter, metric_exporter = _exporters(endpoint)
        resource = Resource.create({"service.name": "engine", "host.name": socket.gethostname()})
        # Shut down by aclose(), not at the interpreter's exit.
        meters = MeterProvider(
            resource=resource,
            shutdown_on_exit=False,
            metric_readers=[
                PeriodicExportingMetricReader(
                    _Watched(metric_exporter, "metrics", endpoint.url)  # type: ignore[arg-type]  # a wrapper
                )
            ],
        )
        logs = LoggerProvider(resource=resource, shutdown_on_exit=False)
        exporting = _Watched(log_exporter, "log records", endpoint.url)
        # The queue is bounded here, where refusals can be counted: the SDK's own (larger, so
        # never full) drops without saying how many.
        logs.add_log_record_processor(
            BatchLogRecordProcessor(
                exporting,  # type: ignore[arg-type]  # a wrapper, not a subclass
                max_queue_size=2 * QUEUE,
                meter_provider=meters,
            )
        )
        logging.getLogger(_EXPORTER_LOGGER).setLevel(logging.CRITICAL)
        export = cls(endpoint, metrics, logs, meters, logs.get_logger("engine"), exporting)
        export._instruments()
        return export

    @property
    def dropped(self) -> int:
        """Records that never reached the collector: refused by the full queue, or in a
        batch it did not take."""
        return self.refused + self._exporting.lost

    def observe(self, record: Mapping[str, Any]) -> None:
        """Queue ``record`` (its JSON, as shown) as a log record; never blocks."""
        if self.emitted - self._exporting.taken >= QUEUE:
            self.refused += 1
            return
        self.emitted += 1
        kind = str(record.get("type"))
        body = f"{record.get('gadget')}/{record.get('source')}" if kind == "event" else kind
        self._logger.emit(
            timestamp=time.time_ns(),
            body=body,
            attributes={"engine.record.type": kind, **dict(attributes(record))},
        )

    def _instruments(self) -> None:
        from opentelemetry.metrics import CallbackOptions, Observation

        meter = self._meters.get_meter("engine")
        metrics = self.metrics

        def per_map(field: str) -> Any:
            def observe(_: CallbackOptions) -> Iterator[Observation]:
                maps = {} if metrics.engine is None else dict(metrics.engine.stats.maps)
                for (gadget, name), stats in maps.items():
                    yield Observation(getattr(stats, field), {"gadget": gadget, "map": name})

            return observe

        def lost(_: CallbackOptions) -> Iterator[Observation]:
            maps = {} if metrics.engine is None else dict(metrics.engine.stats.maps)
            for (gadget, name), s in maps.items():
                for where, n in (("kernel", s.lost_kernel), ("engine", s.lost_engine)):
                    yield Observation(n, {"gadget": gadget, "map": name, "where": where})

        for field in ("received", "delivered"):
            meter.create_observable_counter(
                f"engine.events.{field}", [per_map(field)], unit="{event}"
            )
        meter.create_observable_counter("engine.events.lost", [lost], unit="{event}")
        meter.create_observable_gauge(
            "engine.attached_netns", [lambda _: [Observation(len(metrics.attachments))]]
        )
        meter.create_observable_gauge(
            "engine.containers", [lambda _: [Observation(len(metrics.containers))]]
        )
        meter.create_observable_counter(
            "engine.otlp.dropped", [lambda _: [Observation(self.dropped)]], unit="{record}"
        )
        latency = meter.create_histogram("engine.attach.latency", unit="s")
        metrics.latency_observers.append(latency.record)

    async def aclose(self) -> None:
        """Flush what is queued and stop the exporters' threads, within ``SHUTDOWN_SECONDS``
        (a collector that is down does not hold the engine's exit longer)."""
        with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_SECONDS):
            await trio.to_thread.run_sync(self._shutdown, abandon_on_cancel=True)
        if self.dropped:
            log.warning("OTLP: %d records dropped (the collector did not keep up)", self.dropped)

    def _shutdown(self) -> None:
        millis = int(SHUTDOWN_SECONDS * 1000)
        self._logs.force_flush(millis)
        self._logs.shutdown()
        self._meters.shutdown(timeout_millis=millis)


def _exporters(endpoint: Endpoint) -> tuple[Any, Any]:
    if endpoint.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return (
            OTLPLogExporter(endpoint=endpoint.url, insecure=True, timeout=EXPORT_TIMEOUT),
            OTLPMetricExporter(endpoint=endpoint.url, insecure=True, timeout=EXPORT_TIMEOUT),
        )
    from opentelemetry.exporter.otlp.proto.http._log_exporter import (
        OTLPLogExporter as HttpLogExporter,
    )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )

    return (
        HttpLogExporter(endpoint=f"{endpoint.url}/v1/logs", timeout=EXPORT_TIMEOUT),
        HttpMetricExporter(endpoint=f"{endpoint.url}/v1/metrics", timeout=EXPORT_TIMEOUT),
    )


def attributes(record: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """A record's JSON as log attributes: ``gadget``, ``source`` and the other top-level
    keys, the container's as OpenTelemetry names them (``container.name``,
    ``k8s.pod.name``...), and an event's data as ``data.FIELD``."""
    for key, value in record.items():
        if key == "type":
            continue
        if key == "container" and isinstance(value, Mapping):
            yield from _container(value)
        elif key == "data" and isinstance(value, Mapping):
            for field, v in value.items():
                yield f"data.{field}", _value(v)
        elif value is not None:
            yield key, _value(value)


# Our container keys as OpenTelemetry's semantic conventions name them.
_CONTAINER = {"id": "id", "name": "name", "image": "image.name", "runtime": "runtime"}
_K8S = {
    "namespace": "namespace.name",
    "pod": "pod.name",
    "pod_uid": "pod.uid",
    "container": "container.name",
}


def _container(container: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    yield from _renamed(container, _CONTAINER, "container")
    k8s = container.get("k8s")
    if isinstance(k8s, Mapping):
        yield from _renamed(k8s, _K8S, "k8s")


def _renamed(
    values: Mapping[str, Any], names: Mapping[str, str], prefix: str
) -> Iterator[tuple[str, Any]]:
    for key, name in names.items():
        if values.get(key) is not None:
            yield f"{prefix}.{name}", _value(values[key])


def _value(value: Any) -> Any:
    """An attribute value OpenTelemetry takes: text, bool, a 64-bit int, a float, or a list
    of one of those; anything else as JSON text."""
    if isinstance(value, bool | str | float):
        return value
    if isinstance(value, int):
        return value if -_MAX_INT - 1 <= value <= _MAX_INT else str(value)
    if isinstance(value, list) and all(isinstance(v, int) and abs(v) <= _MAX_INT for v in value):
        return value
    return json.dumps(value, default=str)
