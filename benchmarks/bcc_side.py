"""What the bcc baselines share: the gadget compiled by bcc itself, its target, its buffer."""

from __future__ import annotations

import ctypes as ct
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.bcc.loader import full_source
from engine.events.pump import PERF_PAGE_COUNT  # the engine's default, given to bcc too
from engine.gadget.model import Gadget

GADGETS = Path(__file__).with_name("gadgets")
TRACEPOINT = "syscalls:sys_enter_getppid"


def gadget_path(kind: str) -> Path:
    return GADGETS / f"getppid_{kind}.c"


def records_per_call(kind: str) -> int:
    """How many records the gadget writes per getppid() call (its ``RECORDS_PER_CALL``)."""
    found = re.search(r"^#define RECORDS_PER_CALL (\d+)$", gadget_path(kind).read_text(), re.M)
    if found is None:
        raise ValueError(f"{gadget_path(kind)} defines no RECORDS_PER_CALL")
    return int(found[1])


def set_target(bpf: Any, pid: int) -> None:
    bpf["fired"][ct.c_int(0)] = ct.c_uint64(0)
    bpf["target"][ct.c_int(0)] = ct.c_uint32(pid)


def fired(bpf: Any) -> int:
    return int(bpf["fired"][ct.c_int(0)].value)


@contextmanager
def bcc_gadget(kind: str) -> Iterator[Any]:
    """The gadget as bcc compiles it (no origin header: bcc's own records), attached."""
    from bcc import BPF

    bpf = BPF(text=full_source(Gadget.from_file(gadget_path(kind))))
    try:
        bpf.attach_tracepoint(tp=TRACEPOINT, fn_name=b"on_getppid")
        yield bpf
    finally:
        bpf.cleanup()


def open_buffer(
    bpf: Any, kind: str, on_event: Callable[[Any, Any, int], None], wakeup_events: int = 1
) -> Callable[..., Any]:
    """bcc's documented loop: the buffer opened with ``on_event``; returns its poll function.
    A perf buffer wakes its reader every ``wakeup_events`` records (bcc's default: 1)."""
    if kind == "ringbuf":
        bpf["events"].open_ring_buffer(on_event)
        return bpf.ring_buffer_poll  # type: ignore[no-any-return]
    bpf["events"].open_perf_buffer(on_event, page_cnt=PERF_PAGE_COUNT, wakeup_events=wakeup_events)
    return bpf.perf_buffer_poll  # type: ignore[no-any-return]
