"""The in-kernel selection: two maps in every gadget (``engine_filter``, ``engine_mntns``, from
the loader's prelude) that tell a static probe whose processes to report (docs/selection.md).
"""

from __future__ import annotations

import contextlib
import ctypes as ct
from typing import Any

from engine.bcc.loader import LoadedGadget
from engine.world.state import World


async def sync_filter(loaded: LoadedGadget, world: World) -> None:
    """Make the gadget's selection maps say what the world says.

    Worked out on the trio thread, written in a worker thread under the gadget's lock: bcc's
    tables are not safe to touch while a hook or an attach uses the same ``BPF`` object.
    """
    wanted = (not world.selection.selects_everything, frozenset(world.selected_mntns()))
    # Called at every change of the world: most (a netns come or gone) leave it as it is.
    if wanted == loaded.selection_written:
        return
    await loaded.call(_write, loaded.bpf, *wanted)
    loaded.selection_written = wanted


def _write(bpf: Any, on: bool, wanted: frozenset[int]) -> None:
    try:
        flag = bpf.get_table("engine_filter")
        ids = bpf.get_table("engine_mntns")
    except KeyError:
        return
    flag[ct.c_int(0)] = ct.c_uint(1 if on else 0)
    present = {int(k.value) for k in ids}
    for gone in present - wanted:
        with contextlib.suppress(KeyError):
            del ids[ct.c_ulonglong(gone)]
    for new in wanted - present:
        ids[ct.c_ulonglong(new)] = ct.c_ubyte(1)
