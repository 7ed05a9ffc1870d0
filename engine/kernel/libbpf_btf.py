"""Looking names up in the running kernel's BTF through libbpf (bcc's own dependency).

Used where only an id is needed (feature probes, attach-target checks); engine/btf.py reads
the raw BTF itself to write struct layouts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os

log = logging.getLogger(__name__)

BTF_KIND_TYPEDEF = 8
BTF_KIND_FUNC = 12


@functools.cache
def _libbpf() -> ctypes.CDLL:
    libbpf = ctypes.CDLL(ctypes.util.find_library("bpf") or "libbpf.so.1", use_errno=True)
    libbpf.btf__load_vmlinux_btf.restype = ctypes.c_void_p
    libbpf.btf__find_by_name_kind.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32)
    libbpf.btf__find_by_name_kind.restype = ctypes.c_int32
    return libbpf


@functools.cache
def _vmlinux_btf() -> int | None:
    # Loaded once per process and kept: the running kernel's BTF does not change.
    handle = _libbpf().btf__load_vmlinux_btf()
    if not handle:
        log.info("no kernel BTF (%s)", os.strerror(ctypes.get_errno()))
        return None
    return int(handle)


def btf_id(name: str, kind: int) -> int | None:
    """The BTF id of ``name`` of ``kind``: 0 when absent, None when the kernel has no BTF."""
    btf = _vmlinux_btf()
    if btf is None:
        return None
    return max(0, int(_libbpf().btf__find_by_name_kind(btf, name.encode(), kind)))
