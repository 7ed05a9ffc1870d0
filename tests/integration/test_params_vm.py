"""Gadget parameters on a kernel with its own headers (Debian's 6.1 VM, where bcc compiles
against matching headers rather than BTF layouts): given at start, changed while running.
The gadget is written the bcc way (``TRACEPOINT_PROBE``), which compiles on both kernels;
examples/read_sizes.c reads the tracepoint through BTF layouts and is tested on this machine's
kernel (tests/integration/test_params.py). This file runs here too with ENGINE_RUN_VMKERNEL=1."""

from __future__ import annotations

import os
from typing import Any

import pytest
import trio

from engine.engine import Engine, open_engine
from engine.gadget.model import Gadget
from tests.integration.static_helpers import collect_until, events

pytestmark = [pytest.mark.integration, pytest.mark.vmkernel]

# Sizes no one else in this process reads: one below the starting minimum, one above it.
SMALL, LARGE = 1234, 4321
# A bool before the u64: the map's struct has padding between them, as bcc's ctypes has.
GADGET = """\
struct read_t { u32 pid; u32 pad; u64 size; };
BPF_RINGBUF_OUTPUT(reads, 64);
ENGINE_PARAM(bool, enabled, true, "report anything at all");
ENGINE_PARAM(u64, min_size, 1, "report only reads of at least this many bytes");

TRACEPOINT_PROBE(syscalls, sys_exit_read)
{
    if (!ENGINE_PARAM_GET(enabled) || args->ret <= 0 || (u64)args->ret < ENGINE_PARAM_GET(min_size))
        return 0;
    struct read_t r = {.pid = bpf_get_current_pid_tgid() >> 32, .size = args->ret};
    reads.ringbuf_output(&r, sizeof(r), 0);
    return 0;
}
"""


def _read(sizes: list[int]) -> None:
    fd = os.open("/dev/zero", os.O_RDONLY)
    try:
        for size in sizes:
            os.read(fd, size)
    finally:
        os.close(fd)


def mine(seen: list[dict[str, Any]]) -> list[int]:
    me = os.getpid()
    return [
        e["size"] for e in events(seen, "reads") if e["pid"] == me and e["size"] in (SMALL, LARGE)
    ]


async def reported(engine: Engine, sizes: list[int]) -> list[int]:
    """What the gadget reports of reads of ``sizes``, the last of which must be reported: once
    it is seen, the reads before it would have been (the ring buffer keeps their order)."""
    await trio.to_thread.run_sync(_read, sizes)
    return mine(await collect_until(engine, lambda s: sizes[-1] in mine(s), 60))


async def test_parameters_given_at_start_and_changed(root: None) -> None:
    gadget = Gadget.from_source(GADGET, "sizes.c")
    with trio.fail_after(300):
        async with open_engine(gadget, containers=False, params={"min_size": 3000}) as engine:
            assert await reported(engine, [SMALL, SMALL, LARGE]) == [LARGE]
            await engine.set_param("sizes", "min_size", SMALL)
            assert await reported(engine, [SMALL, LARGE]) == [SMALL, LARGE]
            await engine.set_param("sizes", "enabled", False)
            await trio.to_thread.run_sync(_read, [SMALL, LARGE])
            await engine.set_param("sizes", "enabled", "true")
            assert await reported(engine, [LARGE]) == [LARGE]
