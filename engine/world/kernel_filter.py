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


def kernel_selection(world: World) -> tuple[int, dict[int, int]]:
    """What the in-kernel selection maps should say (engine.bcc.prelude):
    ``engine_filter[0]``, and ``engine_mntns``: 1 selected, 0 known and not selected."""
    if not world.filters_tasks:
        return 0, {}
    known: dict[int, int] = {m: 0 for m in world.mntns_pending.rejected()}
    for c in world.containers.values():
        if c.mntns_inode is not None:
            selected = int(world.selection.matches(c))
            known[c.mntns_inode] = max(known.get(c.mntns_inode, 0), selected)
    if world.host_mntns is not None:
        known[world.host_mntns] = int(world.selection.includes_host)
    # Mode 2: the kernel lets namespaces it does not know through, for the engine to hold
    # until the runtime says whose they are; with no runtime followed, nobody will.
    return (2 if world.follows_containers else 1), known


async def sync_filter(
    loaded: LoadedGadget, world: World, selection: tuple[int, dict[int, int]] | None = None
) -> None:
    """Make the gadget's selection maps say what the world says (``selection``: the
    world's ``kernel_selection``, when the caller has worked it out for several gadgets).

    Worked out on the trio thread, written in a worker thread under the gadget's lock: bcc's
    tables are not safe to touch while a hook or an attach uses the same ``BPF`` object.
    """
    mode, known = kernel_selection(world) if selection is None else selection
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
