"""Hooks on a real engine: real bcc, a real tracepoint hammered from this process.

The gadget counts and reports getppid() calls of this test process only, so other activity on
the machine cannot disturb the figures.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from engine import Event, HookError, HookFailed, Lost, SelectionChanged, open_engine
from tests.support.recorder import first

pytestmark = pytest.mark.integration

FLOOD = r"""
struct call {
    u64 n;
};

BPF_RINGBUF_OUTPUT(calls, 16);
BPF_ARRAY(counts, u64, 1);

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
    if ((bpf_get_current_pid_tgid() >> 32) != TEST_PID)
        return 0;
    int zero = 0;
    u64 *count = counts.lookup(&zero);
    if (!count)
        return 0;
    u64 n = __sync_fetch_and_add(count, 1);
    struct call *c = calls.ringbuf_reserve(sizeof(*c));
    if (!c)
        return 0;
    c->n = n;
    calls.ringbuf_submit(c, 0);
    return 0;
}
"""


@pytest.fixture
def flood_gadget(root: None, tmp_path: Path) -> str:
    path = tmp_path / "flood.c"
    path.write_text(FLOOD.replace("TEST_PID", str(os.getpid())))
    return str(path)


async def _calls(n: int) -> None:
    """``n`` getppid() calls from a worker thread (same process, so the gadget sees them)."""

    def hammer() -> None:
        for _ in range(n):
            os.getppid()

    await trio.to_thread.run_sync(hammer)


async def test_hook_that_raises_gives_hook_failed_and_engine_keeps_running(
    flood_gadget: str,
) -> None:
    handled: list[int] = []
    five = trio.Event()
    with trio.fail_after(60):
        async with open_engine(flood_gadget) as eng:

            @eng.on_event("calls")
            async def picky(event: Event) -> None:
                if event.data["n"] == 0:
                    raise ValueError("the first call is odd")
                handled.append(event.data["n"])
                if len(handled) == 5:
                    five.set()

            await _calls(1)
            failed = await first(eng.events(), HookFailed)
            assert failed.to_json() == {
                "type": "hook_failed",
                "hook": "picky",
                "error_type": "ValueError",
                "message": "the first call is odd",
                "record_type": "event",
            }
            await _calls(5)
            await five.wait()
            assert handled == [1, 2, 3, 4, 5]
            assert eng.hook_stats["picky"].failed == 1
            assert eng.hook_stats["picky"].handled == 5


async def test_slow_hook_drops_are_counted_and_records_still_flow(flood_gadget: str) -> None:
    release = trio.Event()
    calls = 20_000
    with trio.fail_after(60):
        async with open_engine(flood_gadget, hook_buffer=8) as eng:

            @eng.on_event()
            async def slow(event: Event) -> None:
                await release.wait()

            await _calls(calls)
            # The hook is stuck; the consumer still gets events and lifecycle records.
            eng.set_selection(["name=web*"], host=True)
            before: list[object] = []
            changed = await first(eng.events(), SelectionChanged, before=before)
            events = sum(isinstance(record, Event) for record in before)
            assert changed.to_json() == {
                "type": "selection_changed",
                "select": ["name=web*"],
                "exclude": [],
                "host": True,
            }
            assert events > 1000
            stats = eng.hook_stats["slow"]
            assert stats.dropped > 0
            received = eng.stats.maps[("flood", "calls")].received
            assert received > 1000
            assert received - stats.dropped <= 8 + 1  # the buffer, and the one the hook holds

            release.set()
            lost = await first(eng.events(), Lost, lambda record: record.where == "hook:slow")
            assert lost.source == "calls"
            assert lost.gadget == "flood"
            assert lost.count == stats.dropped

            # A stuck hook does not hold the engine up when it stops.
            release = trio.Event()
            await _calls(100)
            await trio.sleep(0.2)
            stopping = trio.current_time()
            eng.stop()
    assert trio.current_time() - stopping < 2


async def test_strict_mode_makes_a_hook_failure_fatal(flood_gadget: str) -> None:
    with trio.fail_after(60), pytest.raises(HookError) as exc:
        async with open_engine(flood_gadget, strict=True) as eng:

            @eng.on_event("calls")
            async def broken(event: Event) -> None:
                raise RuntimeError("no")

            await _calls(1)
            async for _record in eng.events():
                pass
    assert exc.value.hook == "broken"
    assert isinstance(exc.value.error, RuntimeError)


async def test_hook_reads_a_map_and_starts_its_own_task(flood_gadget: str) -> None:
    counts: list[int] = []
    done = trio.Event()
    with trio.fail_after(60):
        async with open_engine(flood_gadget) as eng:

            async def read_counts() -> None:
                items = await eng.map("flood", "counts").items()
                counts.append(items[0][1].value)
                done.set()

            @eng.on_event("calls")
            async def on_call(event: Event) -> None:
                if event.data["n"] == 9:
                    eng.start_soon(read_counts)

            await _calls(10)
            await done.wait()
            assert counts == [10]
            with pytest.raises(KeyError):
                eng.map("flood", "nope")
            eng.stop()
