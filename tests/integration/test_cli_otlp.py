"""``engine run --otlp`` against a real OTLP gRPC receiver on loopback: exec records of a real
container arrive as log records with their attributes, the engine's metrics arrive, and a
receiver that goes away and comes back on the same port never stalls the engine (records keep
reaching stdout meanwhile, and reach the receiver again once it is back)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import trio

from tests.support.constants import EXAMPLES
from tests.support.docker import Containers
from tests.support.otlp import Received, Receiver, receiver
from tests.support.process import EngineProcess, engine_process

pytestmark = [pytest.mark.integration, pytest.mark.docker]


@pytest.fixture
def collector() -> Iterator[Receiver]:
    yield from receiver()


def _named(program: str) -> str:
    return f"/tmp/engine-otlp-{program}"


async def _exec(containers: Containers, box: str, program: str) -> None:
    await containers.exec(box, "ln", "-sf", "/bin/true", _named(program))
    # busybox under a name it has no applet for exits 127, after the exec that counts here.
    await containers.exec(box, _named(program), check=False)


def _got(program: str) -> Callable[[Received], bool]:
    def found(received: Received) -> bool:
        return any(r.get("data.filename") == _named(program) for _, r in received.logs)

    return found


def _printed(run: EngineProcess, program: str) -> bool:
    return any(e["data"]["filename"] == _named(program) for e in run.events("events"))


async def test_records_and_metrics_reach_a_collector_that_may_go_away(
    containers: Containers, collector: Receiver
) -> None:
    box = containers.start("box", "sleep", "300")
    args = [str(EXAMPLES / "execsnoop.c"), "--select", f"name={box}"]
    with trio.fail_after(120):
        async with engine_process(
            *args,
            "--otlp",
            f"127.0.0.1:{collector.port}",
            env={"OTEL_METRIC_EXPORT_INTERVAL": "500", "OTEL_BLRP_SCHEDULE_DELAY": "200"},
        ) as run:
            await run.line(rf"exporting to OTLP grpc collector 127\.0\.0\.1:{collector.port}")
            await run.until(lambda: bool(run.of_type("attached")))
            await _exec(containers, box, "first")
            await collector.received.until(_got("first"))
            await collector.received.until(lambda got: "engine.events.delivered" in got.metrics)

            collector.stop()
            for n in range(3):  # the engine goes on: each exec reaches stdout at once
                await _exec(containers, box, f"away-{n}")
                await run.until(lambda: _printed(run, f"away-{n}"), 10)  # noqa: B023
            await run.line(r"OTLP collector .* does not take", 30)

            collector.start()
            await _exec(containers, box, "back")
            await run.until(lambda: _printed(run, "back"), 10)
            await collector.received.until(_got("back"), 60)
            await run.line(r"OTLP collector .* takes .* again", 30)
            assert await run.stop() == 0, run.stderr
    first = next(r for _, r in collector.received.logs if r.get("data.filename") == _named("first"))
    container = next(
        e["container"] for e in run.events("events") if e["data"]["filename"] == _named("first")
    )
    assert first["engine.record.type"] == "event"
    assert (first["gadget"], first["source"], first["program"]) == (
        "execsnoop",
        "events",
        "trace_execve",
    )
    assert first["container.name"] == box
    assert first["container.id"] == container["id"]
    assert first["container.image.name"] == "engine-test:latest"
    assert first["container.runtime"] == "docker"
    assert isinstance(first["data.pid"], int) and first["data.pid"] > 0
    assert first["data.comm"]
    assert {"engine.events.received", "engine.events.lost", "engine.attached_netns"} <= (
        collector.received.metrics
    )
    # The engine's own records are exported too.
    assert any(r["engine.record.type"] == "attached" for _, r in collector.received.logs)
    assert not any("Traceback" in line for line in run.stderr)
