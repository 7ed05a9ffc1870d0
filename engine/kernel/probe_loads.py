"""Test loads: the smallest program (``r0 = 0; exit``) of each type, loaded through bpf(2)
and closed at once, so that engine.kernel.features knows what the kernel accepts rather than
what its configuration claims. Nothing is attached; a failure of any kind is a `Refusal`.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import platform
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import attrs

from engine.kernel.libbpf_btf import BTF_KIND_FUNC, btf_id

log = logging.getLogger(__name__)

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")

# Numbers from include/uapi/linux/bpf.h; they are ABI and never change.
_BPF_PROG_LOAD = 5
_PROG_TYPE_SOCKET_FILTER = 1
_PROG_TYPE_KPROBE = 2
_PROG_TYPE_SCHED_CLS = 3
_PROG_TYPE_TRACEPOINT = 5
_PROG_TYPE_RAW_TRACEPOINT = 17
_PROG_TYPE_TRACING = 26
_PROG_TYPE_LSM = 29
_TRACE_FENTRY = 24
_TRACE_FEXIT = 25
_LSM_MAC = 27
_TRACE_ITER = 28
_SYS_BPF = {"x86_64": 321, "aarch64": 280}
# Two 8-byte instructions: r0 = 0 (BPF_ALU64 | BPF_MOV | BPF_K), exit (BPF_JMP | BPF_EXIT).
_RETURN_ZERO = bytes((0xB7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0))


@attrs.frozen
class Refusal:
    """Why a test program could not be loaded; ``errno`` is 0 when it was never tried."""

    errno: int
    problem: str


@attrs.frozen
class _TestProgram:
    """One test load: ``btf_function`` names the kernel function a tracing program targets."""

    name: str
    description: str
    prog_type: int
    attach_type: int = 0
    btf_function: str | None = None


TEST_PROGRAMS = (
    _TestProgram("kprobe", "kprobe/uprobe", _PROG_TYPE_KPROBE),
    _TestProgram("tracepoint", "tracepoint", _PROG_TYPE_TRACEPOINT),
    _TestProgram("raw_tracepoint", "raw tracepoint", _PROG_TYPE_RAW_TRACEPOINT),
    _TestProgram("socket", "socket filter", _PROG_TYPE_SOCKET_FILTER),
    _TestProgram("classifier", "tc classifier", _PROG_TYPE_SCHED_CLS),
    _TestProgram("iter", "task iterator", _PROG_TYPE_TRACING, _TRACE_ITER, "bpf_iter_task"),
    # bpf_fentry_test1 exists for exactly this: a harmless function to attach tests to.
    _TestProgram(
        "fentry", "tracing (fentry)", _PROG_TYPE_TRACING, _TRACE_FENTRY, "bpf_fentry_test1"
    ),
    _TestProgram("fexit", "tracing (fexit)", _PROG_TYPE_TRACING, _TRACE_FEXIT, "bpf_fentry_test1"),
    _TestProgram("lsm", "BPF LSM", _PROG_TYPE_LSM, _LSM_MAC, "bpf_lsm_file_open"),
)


def try_loads() -> dict[str, Refusal | None]:
    """Load each test program, turning every failure (even an unexpected one) into a Refusal."""
    try:
        load = _program_loader()
        btf_ids = _vmlinux_btf_ids({p.btf_function for p in TEST_PROGRAMS if p.btf_function})
    except (OSError, AttributeError) as exc:
        log.warning("cannot probe program loads: %s", exc)
        return {p.name: Refusal(0, f"probing failed: {exc}") for p in TEST_PROGRAMS}
    loads: dict[str, Refusal | None] = {}
    for program in TEST_PROGRAMS:
        try:
            loads[program.name] = _try_load(program, load, btf_ids)
        except Exception as exc:
            # The probe must never take the CLI or the engine down: report and go on.
            log.exception("probing %s failed", program.name)
            loads[program.name] = Refusal(0, f"probing failed: {exc!r}")
    return loads


def _try_load(
    program: _TestProgram, load: Callable[[_ProgLoadAttr], int], btf_ids: Mapping[str, int]
) -> Refusal | None:
    attr = _ProgLoadAttr(
        prog_type=program.prog_type,
        expected_attach_type=program.attach_type,
        prog_name=b"engine_probe",
    )
    if program.btf_function is not None:
        found = btf_ids.get(program.btf_function)
        if found is None:
            return Refusal(0, f"the kernel function {program.btf_function} is not in {VMLINUX_BTF}")
        attr.attach_btf_id = found
    fd_or_errno = load(attr)
    if fd_or_errno >= 0:
        os.close(fd_or_errno)
        return None
    err = -fd_or_errno
    name = errno.errorcode.get(err, str(err))
    return Refusal(err, f"the kernel refused a {program.description} program ({name})")


class _ProgLoadAttr(ctypes.Structure):
    """The BPF_PROG_LOAD member of union bpf_attr, up to attach_btf_id."""

    _fields_ = (
        ("prog_type", ctypes.c_uint32),
        ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * 16),
        ("prog_ifindex", ctypes.c_uint32),
        ("expected_attach_type", ctypes.c_uint32),
        ("prog_btf_fd", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("func_info", ctypes.c_uint64),
        ("func_info_cnt", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64),
        ("line_info_cnt", ctypes.c_uint32),
        ("attach_btf_id", ctypes.c_uint32),
    )


def _program_loader() -> Callable[[_ProgLoadAttr], int]:
    """A function doing BPF_PROG_LOAD of ``r0 = 0; exit``: returns an fd or -errno."""
    number = _SYS_BPF.get(platform.machine())
    if number is None:
        raise OSError(errno.ENOSYS, f"bpf(2) number unknown on {platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    insns = ctypes.create_string_buffer(_RETURN_ZERO, len(_RETURN_ZERO))
    # Tracing and LSM programs must be GPL-compatible.
    license = ctypes.create_string_buffer(b"GPL")

    def load(attr: _ProgLoadAttr) -> int:
        attr.insns = ctypes.addressof(insns)
        attr.insn_cnt = len(_RETURN_ZERO) // 8
        attr.license = ctypes.addressof(license)
        fd = int(
            libc.syscall(
                ctypes.c_long(number),
                ctypes.c_long(_BPF_PROG_LOAD),
                ctypes.byref(attr),
                ctypes.c_uint(ctypes.sizeof(attr)),
            )
        )
        return fd if fd >= 0 else -ctypes.get_errno()

    return load


def _vmlinux_btf_ids(functions: Iterable[str]) -> dict[str, int]:
    """BTF ids of the kernel functions that exist (none when the kernel has no BTF)."""
    ids = {name: btf_id(name, BTF_KIND_FUNC) for name in functions}
    return {name: found for name, found in ids.items() if found}
