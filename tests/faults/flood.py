"""An event flood for the faults tests: a gadget reporting every getppid() of processes named
COMM, and a process named so calling getppid() flat out."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from tests.support.gadget_c import FROM_THE_FLOODER

COMM = "engflood"
FLOOD = (
    FROM_THE_FLOODER
    + r"""
struct call { u64 n; };

BPF_RINGBUF_OUTPUT(calls, 4);

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
    if (!from_the_flooder())
        return 0;
    struct call c = {.n = bpf_ktime_get_ns()};
    calls.ringbuf_output(&c, sizeof(c), 0);
    return 0;
}
"""
)
# Names itself so that the gadget sees only it, then calls getppid() until killed.
HAMMER = f"""
import ctypes, os
ctypes.CDLL(None).prctl(15, b"{COMM}", 0, 0, 0)
while True:
    os.getppid()
"""


@asynccontextmanager
async def hammer() -> AsyncIterator[None]:
    """A process calling getppid() flat out, named so that only FLOOD sees it."""
    process = await trio.lowlevel.open_process([sys.executable, "-c", HAMMER])
    try:
        yield
    finally:
        process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
