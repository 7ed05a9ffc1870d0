"""libbcc, as bcc's Python module loads it, plus the prototypes that module leaves out.

bcc's ``libbcc.py`` declares most functions of libbcc.so.0 but not all we call; calling an
undeclared one through ctypes truncates pointers to int. Everything the engine calls on
libbcc goes through ``lib()`` so that the declarations are made once.
"""

from __future__ import annotations

import ctypes as ct
import functools
from typing import Any


@functools.cache
def lib() -> Any:
    from bcc import lib as bcc_lib  # Debian's python3-bpfcc

    bcc_lib.bpf_num_tables.restype = ct.c_ulonglong
    bcc_lib.bpf_num_tables.argtypes = [ct.c_void_p]
    bcc_lib.bpf_table_name.restype = ct.c_char_p
    bcc_lib.bpf_table_name.argtypes = [ct.c_void_p, ct.c_ulonglong]
    bcc_lib.perf_reader_event_read.restype = None
    bcc_lib.perf_reader_event_read.argtypes = [ct.c_void_p]
    bcc_lib.bcc_iter_attach.restype = ct.c_int
    bcc_lib.bcc_iter_attach.argtypes = [ct.c_int, ct.c_void_p, ct.c_int]
    bcc_lib.bcc_iter_create.restype = ct.c_int
    bcc_lib.bcc_iter_create.argtypes = [ct.c_int]
    bcc_lib.bpf_close_perf_event_fd.restype = ct.c_int
    bcc_lib.bpf_close_perf_event_fd.argtypes = [ct.c_int]  # bcc misspells "argtypes"
    bcc_lib.bpf_lookup_and_delete.restype = ct.c_int
    bcc_lib.bpf_lookup_and_delete.argtypes = [ct.c_int, ct.c_void_p, ct.c_void_p]
    for size in (bcc_lib.bpf_table_key_size, bcc_lib.bpf_table_leaf_size):
        size.restype = ct.c_size_t
        size.argtypes = [ct.c_void_p, ct.c_char_p]
    return bcc_lib


@functools.cache
def uprobe_attach() -> Any:
    """libbcc's ``bpf_attach_uprobe`` with its seventh argument, ``ref_ctr_offset``.

    bcc's Python module declares the function with six arguments (no USDT semaphore). A
    private handle on the library gets its own function object, so declaring all seven here
    leaves bcc's declaration alone.
    """
    fn = ct.CDLL("libbcc.so.0", use_errno=True).bpf_attach_uprobe
    fn.restype = ct.c_int
    fn.argtypes = [
        ct.c_int,  # program fd
        ct.c_int,  # 0: entry, 1: return
        ct.c_char_p,  # event name (used only when no perf PMU exists)
        ct.c_char_p,  # binary path
        ct.c_uint64,  # file offset
        ct.c_int,  # pid, -1 for all
        ct.c_uint32,  # file offset of the USDT semaphore, 0 for none
    ]
    return fn


def perf_callback_types() -> tuple[Any, Any]:
    from bcc.libbcc import _LOST_CB_TYPE, _RAW_CB_TYPE

    return _RAW_CB_TYPE, _LOST_CB_TYPE
