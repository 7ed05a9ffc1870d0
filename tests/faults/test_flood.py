"""An event flood far beyond what the consumer takes: `engine run` writing JSON lines into a
pipe while a process calls getppid() flat out. Lifecycle records still come through, drops
are counted in `lost` records, and SIGINT still stops it within two seconds."""

from __future__ import annotations

import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from tests.faults.kernel_state import NamedNetns, engine_process

pytestmark = pytest.mark.integration

COMM = "engflood"
FLOOD = r"""
struct call { u64 n; };

BPF_RINGBUF_OUTPUT(calls, 4);

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
    char comm[16];
    bpf_get_current_comm(&comm, sizeof(comm));
    if (comm[0] != 'e' || comm[1] != 'n' || comm[2] != 'g' || comm[3] != 'f' ||
        comm[4] != 'l' || comm[5] != 'o' || comm[6] != 'o' || comm[7] != 'd')
        return 0;
    struct call c = {.n = bpf_ktime_get_ns()};
    calls.ringbuf_output(&c, sizeof(c), 0);
    return 0;
}
"""
# Names itself so that the gadget sees only it, then calls getppid() until killed.
HAMMER = f"""
import ctypes, os
ctypes.CDLL(None).prctl(15, b"{COMM}", 0, 0, 0)
while True:
    os.getppid()
"""


@pytest.fixture
async def hammer(root: None) -> AsyncIterator[None]:
    process = await trio.lowlevel.open_process([sys.executable, "-c", HAMMER])
    try:
        yield
    finally:
        process.kill()
        await process.wait()


async def test_flood_keeps_the_engine_responsive(tmp_path: Path, hammer: None) -> None:
    gadget = tmp_path / "flood.c"
    gadget.write_text(FLOOD)
    netns = NamedNetns.named()
    try:
        with trio.fail_after(90):
            async with engine_process(str(gadget)) as engine:
                await engine.wait_until(lambda e: e.events > 10_000)
                await trio.to_thread.run_sync(netns.create)
                with trio.fail_after(5):
                    await engine.wait_until(
                        lambda e: any(r.get("name") == netns.name for r in e.of_type("netns_added"))
                    )
                await engine.wait_until(lambda e: len(e.of_type("lost")) > 0)
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
