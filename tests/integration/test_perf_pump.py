"""The perf buffer pump (engine.events.pump) reads every record, also one written while it was
not waiting: a perf fd reports a wake-up once, and re-arming epoll uses that report up, so a
pump that trusted epoll alone left such a record unread until the next one came (in the VM,
the last records of a burst then never arrived at all). Real bcc on this kernel.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading

import pytest
import trio
import trio.testing

from engine.attach.static import attach_tracepoint
from engine.bcc import libbcc
from engine.bcc.loader import load_gadget
from engine.events.origin import HEADER
from engine.events.pump import BufferPump, buffer_maps
from engine.gadget.model import Gadget

pytestmark = pytest.mark.integration

# The trio thread's own getppid calls only: nothing else in the process makes them.
GADGET = """\
struct hit {
    u32 tid;
    u32 seq;
};

BPF_PERF_OUTPUT(hits);
BPF_ARRAY(calls, u32, 1);

TRACEPOINT_PROBE(syscalls, sys_enter_getppid)
{
    u32 tid = bpf_get_current_pid_tgid();
    if (tid != TID)
        return 0;
    u32 zero = 0;
    u32 *seq = calls.lookup(&zero);
    if (!seq)
        return 0;
    /* One thread only: no atomics needed (and bcc's BPF target refuses a fetch-and-add
     * whose result is used). */
    struct hit h = {tid, *seq};
    *seq += 1;
    hits.perf_submit(args, &h, sizeof(h));
    return 0;
}
"""


@pytest.mark.parametrize("first", ["before_the_first_wait", "while_waiting"])
async def test_records_written_while_the_pump_is_not_waiting_arrive(root: None, first: str) -> None:
    """The first record comes before the pump waits, or while it does; the second always
    from the batch callback, between a read and the next wait."""
    tid = threading.get_native_id()
    gadget = Gadget.from_source(f"#define TID {tid}\n" + GADGET, "pump.c")
    loaded = await load_gadget(gadget)
    got: list[tuple[int, int]] = []
    arrived = trio.Event()

    def on_batch(_name: str, batch: list[bytes]) -> None:
        got.extend(struct.unpack_from("II", raw, HEADER) for raw in batch)
        if len(got) == 1:
            # Called between the pump's read and its next wait: exactly the window where a
            # record's wake-up used to be lost.
            os.getppid()
        if len(got) >= 2:
            arrived.set()

    try:
        async with contextlib.AsyncExitStack() as stack:
            maps = buffer_maps(libbcc.lib(), loaded.bpf.module)
            pump = BufferPump(loaded.bpf, maps, on_batch)
            stack.callback(pump.close)
            pump.open()
            await stack.enter_async_context(
                attach_tracepoint(loaded, loaded.program("tracepoint__syscalls__sys_enter_getppid"))
            )
            if first == "before_the_first_wait":
                # Its wake-up comes before epoll is armed.
                os.getppid()
            async with trio.open_nursery() as nursery:
                await nursery.start(pump.run)
                if first == "while_waiting":
                    await trio.testing.wait_all_tasks_blocked()
                    os.getppid()
                with trio.move_on_after(10):
                    await arrived.wait()
                nursery.cancel_scope.cancel()
    finally:
        loaded.close()
    assert got == [(tid, 0), (tid, 1)]
