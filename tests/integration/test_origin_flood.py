"""A flood cannot blind the user: every record a gadget tried to write to a full 16-page ring
buffer is either delivered or reported lost by the kernel's count, exactly (docs/events.md,
"Lost records"). Real kernel; the flood is one process of ours calling getppid in a loop.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pytest
import trio

import engine
from engine.gadget.model import Gadget
from tests.support.gadget_c import FROM_THE_FLOODER

pytestmark = [pytest.mark.integration]

CALLS = 300_000
# Each call writes one record with its sequence number, from a process named engflood-*.
FLOOD = (
    FROM_THE_FLOODER
    + r"""
struct seq_t { u64 seq; };
BPF_ARRAY(attempts, u64, 1);
BPF_RINGBUF_OUTPUT(flood, 16);

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
    if (!from_the_flooder())
        return 0;
    u32 zero = 0;
    u64 *n = attempts.lookup(&zero);
    if (!n)
        return 0;
    struct seq_t s = {.seq = __sync_fetch_and_add(n, 1)};
    flood.ringbuf_output(&s, sizeof(s), 0);
    return 0;
}
"""
)


async def hammer(calls: int) -> None:
    """``calls`` getppid calls from a Python named engflood-py (comm is the file's name)."""
    with tempfile.TemporaryDirectory() as folder:
        link = Path(folder) / "engflood-py"
        link.symlink_to(sys.executable)
        code = f"import os\nfor _ in range({calls}): os.getppid()\n"
        await trio.run_process([str(link), "-S", "-c", code])


async def test_delivered_and_reported_lost_add_up_to_every_record_written() -> None:
    gadget = Gadget.from_source(FLOOD, "flood.c")
    seqs: list[int] = []
    lost = 0
    complete = trio.Event()
    with trio.fail_after(120):
        async with engine.open_engine(gadget, containers=False, iter_interval=3600) as eng:

            async def follow() -> None:
                nonlocal lost
                async for record in eng.events():
                    json = record.to_json()
                    if json["type"] == "event":
                        seqs.append(json["data"]["seq"])
                    elif json["type"] == "lost":
                        assert (json["source"], json["where"]) == ("flood", "kernel")
                        lost += json["count"]
                    if len(seqs) + lost >= CALLS:
                        complete.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(follow)
                await hammer(CALLS)
                # The kernel's counts are read at least once a second: wait for them.
                with trio.move_on_after(10):
                    await complete.wait()
                eng.stop()
    stats = eng.stats.for_map("flood", "flood")
    assert lost > 0, "the flood never filled the ring: nothing shown"
    assert seqs, "nothing delivered"
    assert len(seqs) + lost == CALLS
    assert len(set(seqs)) == len(seqs) and max(seqs) < CALLS
    assert stats.lost_kernel == lost
    assert stats.delivered == len(seqs)
