"""The in-kernel selection: two maps in every gadget (``engine_filter``, ``engine_mntns``, from
the loader's prelude) that tell every static program whose records to write (docs/events.md).
"""

from __future__ import annotations

import contextlib
import ctypes as ct
from collections.abc import Mapping
from typing import Any

from engine.bcc.loader import LoadedGadget
from engine.world.state import World


async def sync_filter(loaded: LoadedGadget, world: World) -> None:
    """Make the gadget's selection maps say what the world says.

    Worked out on the trio thread, written in a worker thread under the gadget's lock: bcc's
    tables are not safe to touch while a hook or an attach uses the same ``BPF`` object.
    """
    mode, known = world.kernel_selection()
    wanted = (mode, frozenset(known.items()))
    # Called at every change of the world: most (a netns come or gone) leave it as it is.
    if wanted == loaded.selection_written:
        return
    await loaded.call(_write, loaded.bpf, mode, known)
    loaded.selection_written = wanted


def _write(bpf: Any, mode: int, wanted: Mapping[int, int]) -> None:
    try:
        flag = bpf.get_table("engine_filter")
        ids = bpf.get_table("engine_mntns")
    except KeyError:
        return
    present = {int(k.value): int(v.value) for k, v in ids.items()}
    # Namespaces first, the mode last: a selection that starts never sees a map half written.
    for gone in present.keys() - wanted.keys():
        with contextlib.suppress(KeyError):
            del ids[ct.c_ulonglong(gone)]
    for mntns, value in wanted.items():
        if present.get(mntns) != value:
            ids[ct.c_ulonglong(mntns)] = ct.c_ubyte(value)
    flag[ct.c_int(0)] = ct.c_uint(mode)
