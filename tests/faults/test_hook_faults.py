"""Hooks and consumers that misbehave, beyond tests/integration/test_hooks.py (which has a hook
that raises, one stuck under a flood, strict mode, and a hook-started task that works):
a hook-started task that fails, a hook that never returns while the engine stops, and a
consumer that never reads. The engine ends promptly each time and leaves nothing behind
(checked after every test: tests/support/leaks.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from engine import Event, open_engine
from tests.faults.flood import FLOOD, hammer

pytestmark = pytest.mark.integration


@pytest.fixture
def flood_gadget(root: None, tmp_path: Path) -> str:
    path = tmp_path / "flood.c"
    path.write_text(FLOOD)
    return str(path)


class TaskBroke(Exception):
    pass


async def test_failing_task_started_by_a_hook_ends_the_engine_cleanly(flood_gadget: str) -> None:
    with trio.fail_after(60), pytest.raises(TaskBroke, match="the task broke"):
        async with hammer(), open_engine(flood_gadget, containers=False) as eng:

            async def broken() -> None:
                raise TaskBroke("the task broke")

            started = False

            @eng.on_event("calls")
            async def starts_a_task(event: Event) -> None:
                nonlocal started
                if not started:
                    started = True
                    eng.start_soon(broken)

            async for _record in eng.events():
                pass


async def test_hook_that_never_returns_does_not_hold_up_stop(flood_gadget: str) -> None:
    entered = trio.Event()
    with trio.fail_after(60):
        async with hammer(), open_engine(flood_gadget, containers=False) as eng:

            @eng.on_event()
            async def forever(event: Event) -> None:
                entered.set()
                with trio.CancelScope(shield=True):  # deaf even to cancellation... for a while
                    await trio.sleep(0.5)
                await trio.sleep_forever()

            await entered.wait()
            asked = trio.current_time()
            eng.stop()
            async for _record in eng.events():
                pass
    assert trio.current_time() - asked < 2.0


async def test_consumer_that_never_reads(flood_gadget: str) -> None:
    """Nobody iterates events(): the kernel side goes on, drops are counted, hooks still see
    every record, and stopping is prompt."""
    seen = 0
    with trio.fail_after(60):
        async with hammer(), open_engine(flood_gadget, buffer=64, containers=False) as eng:

            @eng.on_event("calls")
            async def count(event: Event) -> None:
                nonlocal seen
                seen += 1

            await trio.sleep(2)
            assert eng.pending() == 64
            stats = eng.stats.maps[("flood", "calls")]
            assert stats.received > 1000
            assert stats.lost_engine > 0
            asked = trio.current_time()
            eng.stop()
        left = eng.leftover()
    assert trio.current_time() - asked < 2.0
    assert seen > 0
    assert len(left) >= 64
