"""fentry, fexit and lsm programs: BPF trampolines, attached through a link fd.

The loader already loaded these programs with their BTF target (libbcc finds it from the
kernel-side name, ``kfunc__<fn>``/``kretfunc__<fn>``/``lsm__<hook>``), so attaching is one
``bpf_raw_tracepoint_open`` on the program fd; closing the returned link fd detaches.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import os
from collections.abc import AsyncIterator

import trio

from engine.bcc import libbcc
from engine.bcc.loader import LoadedGadget, LoadedProgram
from engine.errors import AttachError
from engine.gadget.sections import Kind


@contextlib.asynccontextmanager
async def attach_trampoline(loaded: LoadedGadget, program: LoadedProgram) -> AsyncIterator[None]:
    """Attach an fentry, fexit or lsm program; its target was checked when it was loaded."""
    lib = libbcc.lib()
    attach = lib.bpf_attach_lsm if program.spec.kind is Kind.LSM else lib.bpf_attach_kfunc

    def open_link() -> int:
        fd = int(attach(program.fd))
        return fd if fd >= 0 else -(ct.get_errno() or -fd)

    # Not abandoned on cancellation: the link always comes back and is always closed.
    link = await trio.to_thread.run_sync(open_link)
    if link < 0:
        raise AttachError(
            program.spec.function,
            f"{program.spec.section.text} in {loaded.gadget.path}: {os.strerror(-link)}",
            errno=-link,
        )
    try:
        yield
    finally:
        os.close(link)
