"""A gadget parameter on a kernel with its own headers (Debian's 6.1 VM, where bcc compiles
against matching headers rather than BTF layouts): given at start, changed while running.
(On this machine's kernel: tests/integration/test_params.py; this file runs here too with
ENGINE_RUN_VMKERNEL=1.)"""

from __future__ import annotations

import os
from typing import Any

import pytest
import trio

from engine.engine import open_engine
from tests.integration.static_helpers import collect_until, events
from tests.support.constants import EXAMPLES

pytestmark = [pytest.mark.integration, pytest.mark.vmkernel]

# Sizes no one else in this process reads: one below the starting minimum, one above it.
SMALL, LARGE = 1234, 4321


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


async def test_min_size_given_at_start_and_changed(root: None) -> None:
    with trio.fail_after(300):
        async with open_engine(
            EXAMPLES / "read_sizes.c", containers=False, params={"min_size": 3000}
        ) as engine:
            # The large read comes last: once it is seen, the small ones would have been.
            await trio.to_thread.run_sync(_read, [SMALL, SMALL, LARGE])
            before = mine(await collect_until(engine, lambda s: LARGE in mine(s), 60))
            await engine.set_param("read_sizes", "min_size", SMALL)
            await trio.to_thread.run_sync(_read, [SMALL, LARGE])
            after = mine(await collect_until(engine, lambda s: LARGE in mine(s), 60))
    assert before == [LARGE]
    assert after == [SMALL, LARGE]
