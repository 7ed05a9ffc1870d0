"""A real OTLP gRPC receiver on loopback, built from the opentelemetry-proto package's service
stubs: it keeps every log record and metric name it is sent, and can stop and start again on
the same port (a collector that goes away and comes back)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import attrs
import grpc
import trio
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.support.commands import free_port


def _plain(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_plain(v) for v in value.array_value.values]
    return None if kind is None else getattr(value, kind)


@attrs.define
class Received:
    """What the receiver was sent: each log record as (body, attributes)."""

    logs: list[tuple[Any, dict[str, Any]]] = attrs.Factory(list)
    metrics: set[str] = attrs.Factory(set)
    changed: threading.Condition = attrs.Factory(threading.Condition)

    def take_logs(self, request: logs_service_pb2.ExportLogsServiceRequest) -> None:
        with self.changed:
            for resource in request.resource_logs:
                for scope in resource.scope_logs:
                    for record in scope.log_records:
                        attributes = {a.key: _plain(a.value) for a in record.attributes}
                        self.logs.append((_plain(record.body), attributes))
            self.changed.notify_all()

    def take_metrics(self, request: metrics_service_pb2.ExportMetricsServiceRequest) -> None:
        with self.changed:
            for resource in request.resource_metrics:
                for scope in resource.scope_metrics:
                    self.metrics.update(m.name for m in scope.metrics)
            self.changed.notify_all()

    async def until(self, condition: Callable[[Received], bool], timeout: float = 20) -> None:  # noqa: ASYNC109
        """Wait (in a worker thread: the receiver's threads notify) until ``condition``."""

        def wait() -> bool:
            with self.changed:
                return self.changed.wait_for(lambda: condition(self), timeout)

        if not await trio.to_thread.run_sync(wait):
            raise AssertionError(f"the receiver did not get that in {timeout}s: {self.logs[-3:]}")

    def records(self) -> list[dict[str, Any]]:
        with self.changed:
            return [attributes for _, attributes in self.logs]


def _servicer(base: type[Any], take: Callable[[Any], None], response: type[Any]) -> Any:
    """A collector service (`base`) whose Export hands each request to `take`."""

    class Servicer(base):  # type: ignore[misc]
        def Export(self, request: Any, context: Any) -> Any:
            take(request)
            return response()

    return Servicer()


@attrs.define
class Receiver:
    port: int
    received: Received = attrs.Factory(Received)
    server: grpc.Server | None = None

    def start(self) -> None:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        # The package's generated gRPC code has no type annotations.
        add_logs = logs_service_pb2_grpc.add_LogsServiceServicer_to_server
        add_metrics = metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server
        logs = _servicer(
            logs_service_pb2_grpc.LogsServiceServicer,
            self.received.take_logs,
            logs_service_pb2.ExportLogsServiceResponse,
        )
        metrics = _servicer(
            metrics_service_pb2_grpc.MetricsServiceServicer,
            self.received.take_metrics,
            metrics_service_pb2.ExportMetricsServiceResponse,
        )
        add_logs(logs, server)  # type: ignore[no-untyped-call]
        add_metrics(metrics, server)  # type: ignore[no-untyped-call]
        if server.add_insecure_port(f"127.0.0.1:{self.port}") != self.port:
            raise RuntimeError(f"the receiver cannot listen on 127.0.0.1:{self.port}")
        server.start()
        self.server = server

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(grace=None).wait()
            self.server = None


def receiver() -> Iterator[Receiver]:
    """A running receiver on a free loopback port, stopped after the test."""
    running = Receiver(free_port())
    running.start()
    try:
        yield running
    finally:
        running.stop()
