"""`engine run --hook` file of the throughput benchmark: points the gadget at the hammer.

The hammer's pid comes in ``$ENGINE_BENCH_TARGET``; once the gadget's ``target`` map holds it,
a line on stderr says so (the benchmark waits for it before the hammer starts).
"""

from __future__ import annotations

import ctypes as ct
import os
import sys
from typing import Any


async def setup(engine: Any) -> None:
    pid = int(os.environ["ENGINE_BENCH_TARGET"])

    def set_target(table: Any) -> None:
        table[ct.c_int(0)] = ct.c_uint32(pid)

    for loaded in engine.gadgets:
        await engine.map(loaded.gadget.name, "target").call(set_target)
    print("engine-bench: target set", file=sys.stderr, flush=True)
