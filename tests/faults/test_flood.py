"""An event flood far beyond what the consumer takes: `engine run` writing JSON lines into a
pipe while a process calls getppid() flat out. Lifecycle records still come through, drops
are counted in `lost` records, and SIGINT still stops it within two seconds."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import trio

from tests.faults.flood import FLOOD, hammer
from tests.support.netns import NamedNetns
from tests.support.process import engine_process

pytestmark = pytest.mark.integration


async def test_flood_keeps_the_engine_responsive(root: None, tmp_path: Path) -> None:
    gadget = tmp_path / "flood.c"
    gadget.write_text(FLOOD)
    netns = NamedNetns.named()
    try:
        with trio.fail_after(90):
            async with hammer(), engine_process(str(gadget), keep_events=False) as engine:
                await engine.until(lambda: engine.events_seen > 10_000, 60, "a flood")
                await trio.to_thread.run_sync(netns.create)
                await engine.until(
                    lambda: any(r.get("name") == netns.name for r in engine.of_type("netns_added")),
                    5,
                    f"netns_added for {netns.name}",
                )
                await engine.until(lambda: engine.of_type("lost"), 30, "a lost record")
                asked = trio.current_time()
                engine.process.send_signal(signal.SIGINT)
                with trio.fail_after(10):
                    code = await engine.process.wait()
                took = trio.current_time() - asked
    finally:
        await trio.to_thread.run_sync(netns.remove)
    assert code == 0, engine.stderr
    assert took < 2.0, took
    lost = sum(r["count"] for r in engine.of_type("lost"))
    assert lost > 0
    summary = next(line for line in engine.stderr if line.startswith("engine: stopped (SIGINT)"))
    assert " 0 lost" not in summary, summary
