"""The OTLP export against a real OTLP gRPC receiver on loopback (in this process): records
become log records with their attributes; the engine's metrics arrive; a full queue drops
and counts instead of blocking; endpoints parse to the collector's usual ports."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from engine.cli.metrics import Metrics
from engine.cli.otlp import QUEUE, Endpoint, OtlpExport
from tests.support.otlp import Receiver, receiver

EVENT = {
    "type": "event",
    "gadget": "execsnoop",
    "source": "events",
    "program": "trace_execve",
    "data": {"pid": 42, "comm": "sh", "mntns_id": 2**64 - 1, "argv": [1, 2]},
    "container": {
        "id": "c" * 64,
        "name": "web-1/app",
        "image": "busybox",
        "runtime": "containerd",
        "k8s": {"namespace": "shop", "pod": "web-1", "pod_uid": "u-1", "container": "app"},
    },
}


@pytest.fixture
def collector() -> Iterator[Receiver]:
    yield from receiver()


@pytest.mark.parametrize(
    ("text", "protocol", "url"),
    [
        ("127.0.0.1", "grpc", "127.0.0.1:4317"),
        ("collector:4000", "grpc", "collector:4000"),
        ("grpc://[::1]", "grpc", "[::1]:4317"),
        ("http://collector", "http", "http://collector:4318"),
        ("https://collector:443/", "http", "https://collector:443"),
    ],
)
def test_endpoints(text: str, protocol: str, url: str) -> None:
    assert Endpoint.parse(text) == Endpoint(protocol, url)


@pytest.mark.parametrize("text", ["ftp://x", "http://x:99999", "http://x/v1/logs", "://"])
def test_bad_endpoints(text: str) -> None:
    with pytest.raises(ValueError, match=r"^'"):
        Endpoint.parse(text)


async def test_records_and_metrics_reach_the_collector(
    collector: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "200")
    metrics = Metrics()
    export = OtlpExport.start(Endpoint.parse(f"127.0.0.1:{collector.port}"), metrics)
    try:
        metrics.observe({"type": "container_added", "container": {"name": "web"}})
        metrics.observe({"type": "attached", "netns": 4026532000, "container": "web"})
        export.observe(EVENT)
        export.observe({"type": "attached", "gadget": "execsnoop", "netns": None})
        await collector.received.until(lambda got: len(got.logs) == 2)
        await collector.received.until(lambda got: "engine.attach.latency" in got.metrics)
    finally:
        await export.aclose()
    (body, event), (_, attached) = collector.received.logs
    assert body == "execsnoop/events"
    assert event == {
        "engine.record.type": "event",
        "gadget": "execsnoop",
        "source": "events",
        "program": "trace_execve",
        "container.id": "c" * 64,
        "container.name": "web-1/app",
        "container.image.name": "busybox",
        "container.runtime": "containerd",
        "k8s.namespace.name": "shop",
        "k8s.pod.name": "web-1",
        "k8s.pod.uid": "u-1",
        "k8s.container.name": "app",
        "data.pid": 42,
        "data.comm": "sh",
        "data.mntns_id": str(2**64 - 1),  # past a 64-bit signed int: as text
        "data.argv": [1, 2],
    }
    assert attached == {"engine.record.type": "attached", "gadget": "execsnoop"}
    assert {"engine.attached_netns", "engine.containers", "engine.otlp.dropped"} <= (
        collector.received.metrics
    )
    assert export.dropped == 0


async def test_a_collector_that_is_down_never_blocks_and_drops_are_counted(
    collector: Receiver,
) -> None:
    collector.stop()
    export = OtlpExport.start(Endpoint.parse(f"127.0.0.1:{collector.port}"), Metrics())
    try:
        started = time.monotonic()
        for _ in range(QUEUE + 1000):
            export.observe(EVENT)
        assert time.monotonic() - started < 5  # a deque append each, whatever the collector
        # The exporter may have taken a batch (512) off the queue by then, to retry it.
        assert 1000 - 512 <= export.refused <= 1000
        assert export.dropped >= export.refused
    finally:
        await export.aclose()
