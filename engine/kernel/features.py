"""Which kinds of program this kernel can run, probed once into a frozen value.

The kernel configuration alone cannot tell: a kernel may be built with fentry support and
still refuse trampolines, or have BPF LSM built in but not active. So, besides reading
``/proc/config.gz``, tracefs and securityfs, the probe loads the smallest possible program
(``r0 = 0; exit``) of each type through bpf(2) and closes it at once. Nothing is attached.

The probe never raises: anything unexpected makes the kinds it concerns unavailable, with
the reason in plain words.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import gzip
import json
import logging
import os
import platform
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import attrs

from engine.gadget.sections import Kind
from engine.kernel.libbpf_btf import BTF_KIND_FUNC, btf_id

log = logging.getLogger(__name__)

TRACEFS = Path("/sys/kernel/tracing")
LSM_LIST = Path("/sys/kernel/security/lsm")
KERNEL_CONFIG = Path("/proc/config.gz")
VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")
PMU_DEVICES = Path("/sys/bus/event_source/devices")

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
# Trampoline-based kinds: a kernel that refuses one usually refuses them all.
_TRAMPOLINE_KINDS = (Kind.FENTRY, Kind.FEXIT, Kind.LSM)


@attrs.frozen
class KindSupport:
    """Whether programs of one kind can run here; ``reason`` says why (or what proved it)."""

    kind: Kind
    available: bool
    reason: str


@attrs.frozen
class KernelFeatures:
    """The outcome of `probe_features`: one `KindSupport` per kind, in `Kind` order."""

    release: str
    kinds: tuple[KindSupport, ...]

    def supports(self, kind: Kind | str) -> KindSupport:
        """The support for ``kind`` (a `Kind` or its name, e.g. "kprobe")."""
        wanted = Kind(kind)
        for support in self.kinds:
            if support.kind is wanted:
                return support
        raise LookupError(f"{wanted.value} was not probed")

    def to_json(self) -> list[dict[str, str | bool]]:
        return [
            {"kind": s.kind.value, "available": s.available, "reason": s.reason} for s in self.kinds
        ]

    def format_table(self) -> str:
        rows = [("kind", "available", "reason")]
        rows += [(s.kind.value, "yes" if s.available else "no", s.reason) for s in self.kinds]
        kind_width = max(len(r[0]) for r in rows)
        available_width = max(len(r[1]) for r in rows)
        lines = [f"kernel {self.release}"]
        lines += [
            f"{kind:<{kind_width}}  {available:<{available_width}}  {reason}".rstrip()
            for kind, available, reason in rows
        ]
        return "\n".join(lines)


@attrs.frozen
class KernelConfig:
    """The kernel's build options, or nothing known when ``/proc/config.gz`` is missing."""

    options: Mapping[str, str] | None

    @classmethod
    def parse(cls, text: str) -> KernelConfig:
        """Read a kernel .config: ``CONFIG_X=y`` lines and ``# CONFIG_X is not set`` lines."""
        options: dict[str, str] = {}
        for raw in text.splitlines():
            line = raw.strip()
            if line.startswith("# CONFIG_") and line.endswith(" is not set"):
                options[line[2 : -len(" is not set")]] = "n"
            elif line.startswith("CONFIG_") and "=" in line:
                name, _, value = line.partition("=")
                options[name] = value.strip('"')
        return cls(options)

    def lacks(self, option: str) -> bool:
        """True only when the configuration is known and ``option`` is neither y nor m.

        An option absent from a .config was not set (its dependencies were not met).
        """
        if self.options is None:
            return False
        return self.options.get(option, "n") not in ("y", "m")


@attrs.frozen
class Refusal:
    """Why a test program could not be loaded; ``errno`` is 0 when it was never tried."""

    errno: int
    problem: str


@attrs.frozen
class ProbeFacts:
    """Everything the decision needs, gathered from the kernel; the decision itself is pure."""

    config: KernelConfig
    is_root: bool
    tracefs_files: frozenset[str]
    pmus: frozenset[str]
    active_lsms: tuple[str, ...] | None
    # Program kind of each test load -> None when the kernel accepted it.
    loads: Mapping[str, Refusal | None]


@attrs.frozen
class _TestProgram:
    """One test load: ``btf_function`` names the kernel function a tracing program targets."""

    name: str
    description: str
    prog_type: int
    attach_type: int = 0
    btf_function: str | None = None


_TEST_PROGRAMS = (
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


def probe_features() -> KernelFeatures:
    """Probe this kernel (as root for meaningful answers); takes a few milliseconds."""
    facts = gather_facts()
    features = KernelFeatures(release=os.uname().release, kinds=decide(facts))
    for support in features.kinds:
        log.debug("%s: %s (%s)", support.kind.value, support.available, support.reason)
    return features


def features_main(as_json: bool) -> int:
    """`engine features [--json]`: print what this kernel supports."""
    features = probe_features()
    if as_json:
        print(json.dumps(features.to_json(), indent=2))
    else:
        print(features.format_table())
    return 0


def decide(facts: ProbeFacts) -> tuple[KindSupport, ...]:
    """Turn the gathered facts into one `KindSupport` per kind."""
    return tuple(_decide_kind(kind, facts) for kind in Kind)


def _decide_kind(kind: Kind, facts: ProbeFacts) -> KindSupport:
    for problem in _problems(kind, facts):
        if problem is not None:
            return KindSupport(kind, False, problem)
    return KindSupport(kind, True, _evidence(kind))


def _problems(kind: Kind, facts: ProbeFacts) -> Iterable[str | None]:
    """The checks for one kind, cheapest and most explanatory first; None means passed."""
    config = facts.config
    if kind in (Kind.KPROBE, Kind.KRETPROBE):
        if config.lacks("CONFIG_KPROBES"):
            yield "kprobes are not built into this kernel (CONFIG_KPROBES)"
        yield _load_problem("kprobe", facts)
        yield _attach_point_problem("kprobe", facts)
    elif kind in (Kind.UPROBE, Kind.URETPROBE, Kind.USDT):
        if config.lacks("CONFIG_UPROBES"):
            yield "uprobes are not built into this kernel (CONFIG_UPROBES)"
        yield _load_problem("kprobe", facts)
        yield _attach_point_problem("uprobe", facts)
    elif kind is Kind.TRACEPOINT:
        yield _load_problem("tracepoint", facts)
        if "events" not in facts.tracefs_files:
            yield f"tracefs is not mounted at {TRACEFS} (mount -t tracefs tracefs {TRACEFS})"
    elif kind is Kind.CLASSIFIER:
        for option, what in (
            ("CONFIG_NET_CLS_BPF", "cls_bpf"),
            ("CONFIG_NET_SCH_INGRESS", "clsact"),
        ):
            if config.lacks(option):
                yield f"the {what} traffic control module is not built ({option})"
        yield _load_problem("classifier", facts)
    elif kind is Kind.LSM:
        if config.lacks("CONFIG_BPF_LSM"):
            yield "BPF LSM is not built into this kernel (CONFIG_BPF_LSM)"
        yield _load_problem("lsm", facts)
        yield _lsm_problem(facts.active_lsms)
    else:
        yield _load_problem(kind.value, facts)


def _load_problem(name: str, facts: ProbeFacts) -> str | None:
    refusal = facts.loads.get(name, Refusal(0, "it was not probed"))
    if refusal is None:
        return None
    if refusal.errno != errno.EPERM:
        return refusal.problem
    if not facts.is_root:
        return f"{refusal.problem}: run as root"
    # Name every trampoline kind the kernel refused, as they usually fail together.
    blocked = [
        k.value
        for k in _TRAMPOLINE_KINDS
        if (r := facts.loads.get(k.value)) is not None and r.errno == errno.EPERM
    ]
    if name in blocked:
        return f"{refusal.problem}: {'/'.join(blocked)} are blocked here"
    return refusal.problem


def _attach_point_problem(probe: str, facts: ProbeFacts) -> str | None:
    """bcc attaches through the perf PMU when there is one, else through tracefs."""
    if probe in facts.pmus or f"{probe}_events" in facts.tracefs_files:
        return None
    if not facts.tracefs_files:
        return (
            f"there is no {probe} perf PMU and tracefs is not mounted at {TRACEFS}"
            f" (mount -t tracefs tracefs {TRACEFS})"
        )
    return f"there is neither a {probe} perf PMU nor {TRACEFS}/{probe}_events"


def _lsm_problem(active_lsms: tuple[str, ...] | None) -> str | None:
    if active_lsms is None:
        return (
            f"cannot tell whether BPF LSM is active: {LSM_LIST} is unreadable"
            " (mount -t securityfs securityfs /sys/kernel/security)"
        )
    if "bpf" not in active_lsms:
        return f"BPF LSM is not active (bpf is not in {LSM_LIST}; boot with lsm=...,bpf)"
    return None


def _evidence(kind: Kind) -> str:
    if kind is Kind.LSM:
        return "a test program loaded and bpf is an active LSM"
    return "a test program loaded"


def parse_lsm_list(text: str) -> tuple[str, ...]:
    return tuple(name for name in text.strip().split(",") if name)


def gather_facts() -> ProbeFacts:
    """Read what the kernel says about itself and try each test load."""
    return ProbeFacts(
        config=_read_config(),
        is_root=os.geteuid() == 0,
        tracefs_files=_list_dir(TRACEFS),
        pmus=_list_dir(PMU_DEVICES),
        active_lsms=_read_lsms(),
        loads=_try_loads(),
    )


def _read_config() -> KernelConfig:
    try:
        return KernelConfig.parse(gzip.decompress(KERNEL_CONFIG.read_bytes()).decode())
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        log.info("kernel configuration unknown (%s): relying on test loads only", exc)
        return KernelConfig(None)


def _list_dir(path: Path) -> frozenset[str]:
    try:
        return frozenset(os.listdir(path))
    except OSError:
        return frozenset()


def _read_lsms() -> tuple[str, ...] | None:
    try:
        return parse_lsm_list(LSM_LIST.read_text())
    except OSError:
        return None


def _try_loads() -> dict[str, Refusal | None]:
    """Load each test program, turning every failure (even an unexpected one) into a Refusal."""
    try:
        load = _program_loader()
        btf_ids = _vmlinux_btf_ids({p.btf_function for p in _TEST_PROGRAMS if p.btf_function})
    except (OSError, AttributeError) as exc:
        log.warning("cannot probe program loads: %s", exc)
        return {p.name: Refusal(0, f"probing failed: {exc}") for p in _TEST_PROGRAMS}
    loads: dict[str, Refusal | None] = {}
    for program in _TEST_PROGRAMS:
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
