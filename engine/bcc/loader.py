"""Compile a gadget with bcc once and load each of its programs once.

bcc's compiler chdir()s the whole process, so compiles are serialized by one lock and run in
a worker thread, off the trio thread. Programs are loaded by us, never by bcc: the module is
compiled with bcc's automatic load and attach of functions named ``kprobe__F``,
``tracepoint__C__N``... turned off (those names are programs of the gadget, declared by bcc's
naming conventions, engine.gadget.bcc_names, and attached by the engine like any other); the
fds are registered with bcc's ``BPF`` object so that its table helpers find them.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import functools
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs
import trio

from engine.bcc import libbcc
from engine.bcc.origin_prelude import origin_prelude
from engine.bcc.prelude import PRELUDE, PRELUDE_SCAN
from engine.bcc.targets import TargetMissing, check_target, find_usdt
from engine.bcc.usdt import argument_readers
from engine.errors import (
    BtfError,
    CompileError,
    TargetNotFoundError,
    UnsupportedProgramError,
    VerifierError,
)
from engine.gadget.iter_output import expand_iter_output
from engine.gadget.model import Gadget, ProgramSpec
from engine.gadget.origin import OutputMap, rewrite_outputs
from engine.gadget.params import Value
from engine.gadget.scanner import SourceScan
from engine.gadget.sections import Kind
from engine.kernel.btf import Btf
from engine.kernel.features import probe_features
from engine.kernel.headers import process_headers
from engine.kernel.layouts import btf_prelude
from engine.kernel.plain_structs import explain, rewrite_plain_structs

log = logging.getLogger(__name__)

# bcc's compile changes the process's working directory: never two at once.
_COMPILE_LOCK = threading.Lock()


def _bpf_module() -> Any:
    import bcc  # Debian's python3-bpfcc; imported late so that unit tests need no bcc.

    return bcc


@functools.cache
def _compile_only() -> Any:
    """bcc's ``BPF`` class without its automatic load and attach of prefixed functions.

    bcc's constructor ends by loading and attaching every function named ``kprobe__F``,
    ``tracepoint__C__N`` and the rest; the engine loads each program itself (and attaches it
    once, detaching it itself), so nothing may be attached behind its back.
    """
    bcc = _bpf_module()

    class CompileOnly(bcc.BPF):  # type: ignore[misc,name-defined]
        def _trace_autoload(self) -> None:
            pass

    return CompileOnly


def prog_type_and_name(spec: ProgramSpec) -> tuple[str, str]:
    """The bcc program type attribute and the kernel-side name bcc must see for this spec.

    libbcc finds the BTF attach target of tracing and LSM programs from the name it is given
    (``kfunc__<fn>``, ``kretfunc__<fn>``, ``lsm__<hook>``, ``bpf_iter__<target>``), so those are
    loaded under such a name while the code comes from the gadget's own function.
    """
    kind = spec.kind
    target = spec.section.parts[0] if spec.section.parts else ""
    if kind in (Kind.KPROBE, Kind.KRETPROBE, Kind.UPROBE, Kind.URETPROBE, Kind.USDT):
        return "KPROBE", spec.function
    if kind is Kind.TRACEPOINT:
        return "TRACEPOINT", spec.function
    if kind is Kind.RAW_TRACEPOINT:
        return "RAW_TRACEPOINT", spec.function
    if kind is Kind.SOCKET:
        return "SOCKET_FILTER", spec.function
    if kind is Kind.CLASSIFIER:
        return "SCHED_CLS", spec.function
    if kind is Kind.ITER:
        return "TRACING", f"bpf_iter__{target}"
    if kind is Kind.FENTRY:
        return "TRACING", f"kfunc__{target}"
    if kind is Kind.FEXIT:
        return "TRACING", f"kretfunc__{target}"
    return "LSM", f"lsm__{target}"


@attrs.frozen
class LoadedProgram:
    spec: ProgramSpec
    fd: int


@attrs.frozen
class SkippedProgram:
    """An optional program this kernel cannot run."""

    spec: ProgramSpec
    reason: str


@attrs.define
class LoadedGadget:
    """A compiled gadget with its loaded programs; ``close()`` releases everything.

    bcc's ``BPF`` object is not thread-safe (its attach/detach bookkeeping and its tables are
    plain dicts and ctypes calls): every call on it, tables included, holds ``lock``.
    """

    gadget: Gadget
    bpf: Any
    programs: dict[str, LoadedProgram]
    skipped: tuple[SkippedProgram, ...] = ()
    # The buffer maps, numbered as the origin rewrite numbered them (engine/gadget/origin.py).
    outputs: dict[str, OutputMap] = attrs.Factory(dict)
    # Whether its records keep their padding members (engine.events.decode).
    padding: bool = False
    # Per iterator record map, its decoder (engine.events.iter_decode): built on first use.
    iter_decoders: dict[str, Any] = attrs.field(factory=dict, eq=False, repr=False)
    # Its parameters' values: the defaults until written to their map (engine/bcc/params.py).
    params: dict[str, Value] = attrs.Factory(lambda self: self.gadget.defaults(), takes_self=True)
    lock: threading.Lock = attrs.field(factory=threading.Lock, eq=False, repr=False)
    # The calls hold ``lock`` one at a time anyway: a thread limiter of the gadget's own, so
    # that none waits for a place in trio's shared limiter. An application that filled that
    # one (a benchmark's 100 `docker run`s did) held the selection maps' update after each
    # new container, and with it the engine's world, for seconds.
    _threads: trio.CapacityLimiter = attrs.field(
        factory=lambda: trio.CapacityLimiter(1), eq=False, repr=False
    )
    # What engine/world/kernel_filter.py last wrote to the selection maps.
    selection_written: tuple[int, frozenset[tuple[int, int]]] | None = attrs.field(
        default=None, eq=False, repr=False
    )
    closed: bool = attrs.field(default=False, init=False)

    def program(self, function: str) -> LoadedProgram:
        return self.programs[function]

    async def call(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """``fn(*args, **kw)`` in the gadget's worker thread, under its lock."""

        def locked() -> Any:
            with self.lock:
                return fn(*args, **kw)

        return await trio.to_thread.run_sync(locked, limiter=self._threads)

    def close(self) -> None:
        """Release the programs, maps and anything bcc attached; idempotent."""
        if self.closed:
            return
        self.closed = True
        with self.lock:
            self.bpf.cleanup()


BuildSource = Callable[[Gadget], str]


def full_source(gadget: Gadget, extra: Sequence[str] = ()) -> str:
    """The text bcc compiles: true layouts, our prelude, then the gadget with its own lines.

    When bcc's headers are not the running kernel's, the gadget's plain kernel structs are
    read through true layouts too (engine.kernel.plain_structs); with matching headers the
    gadget is compiled as written.
    """
    btf = _btf_when_headers_mismatch()
    scan = gadget.scan if btf is None else rewrite_plain_structs(gadget.scan, btf)
    scans = (PRELUDE_SCAN, *(SourceScan.of(text) for text in extra), scan)
    layouts = btf_prelude(*scans, btf=btf, gadget_path=gadget.path)
    path = gadget.path.replace("\\", "\\\\").replace('"', '\\"')
    return layouts + PRELUDE + "".join(extra) + f'#line 1 "{path}"\n' + scan.source


def _btf_when_headers_mismatch() -> Btf | None:
    """The kernel's BTF when bcc's headers are another kernel's; None when they match (or
    when there is no BTF to read: then the headers' layouts are all there is)."""
    if process_headers().matches:
        return None
    try:
        return Btf.from_file()
    except BtfError as exc:
        log.warning("plain kernel structs keep the headers' layouts: %s", exc)
        return None


def check_targets(gadget: Gadget, skipped: Sequence[SkippedProgram] = ()) -> list[str]:
    """Fail before compiling when an attach point is missing; return the USDT readers' C code.

    fentry/fexit/lsm programs are loaded against their BTF target, so a missing function would
    otherwise surface as an obscure load failure.
    """
    skip = {s.spec.function for s in skipped}
    readers = []
    for spec in gadget.programs:
        if spec.function in skip:
            continue
        try:
            check_target(spec)
            if spec.kind is Kind.USDT:
                readers.append(argument_readers(spec.function, find_usdt(*spec.section.parts)))
        except TargetMissing as exc:
            raise TargetNotFoundError(gadget.path, spec.line, spec.function, str(exc)) from exc
    return readers


Supported = Callable[[Kind], tuple[bool, str]]


async def probed_support() -> Supported:
    """What this kernel runs, probed with tiny real loads (engine.kernel.features)."""
    features = await trio.to_thread.run_sync(probe_features)

    def supported(kind: Kind) -> tuple[bool, str]:
        support = features.supports(kind)
        return support.available, support.reason

    return supported


def check_supported(gadget: Gadget, supported: Supported) -> tuple[SkippedProgram, ...]:
    """Fail before compiling when a required program's kind cannot run here."""
    skipped = []
    for spec in gadget.programs:
        ok, reason = supported(spec.kind)
        if ok:
            continue
        if spec.optional:
            skipped.append(SkippedProgram(spec, reason))
            continue
        raise UnsupportedProgramError(
            gadget.path, spec.line, spec.function, spec.kind.value, reason
        )
    return tuple(skipped)


# Lines libbcc prints on every compile of a kernel without its own headers.
_NOISE = ("sh: 1: modprobe", "Unable to find kernel headers", "chdir(")


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Capture what libbcc writes to fd 2 (compiler and verifier messages).

    libbcc writes straight to the process's fd 2; it is pointed at a temporary file for the
    duration, then restored, and whatever was written is handed to the caller. Output of other
    threads in that window is replayed to stderr, so nothing is lost.
    """
    captured: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
            captured.extend(line for line in text.splitlines() if not line.startswith(_NOISE))


def _load_one(bcc: Any, bpf: Any, gadget: Gadget, spec: ProgramSpec) -> LoadedProgram:
    type_attr, kernel_name = prog_type_and_name(spec)
    prog_type = getattr(bcc.BPF, type_attr)
    lib = libbcc.lib()
    fn = spec.function.encode()
    start = lib.bpf_function_start(bpf.module, fn)
    log_size = 1 << 20
    log_buf = ct.create_string_buffer(log_size)
    with _captured_stderr():  # libbcc repeats the verifier log there; we carry it instead
        fd = lib.bcc_func_load(
            bpf.module,
            prog_type,
            kernel_name.encode(),
            start,
            lib.bpf_function_size(bpf.module, fn),
            lib.bpf_module_license(bpf.module),
            lib.bpf_module_kern_version(bpf.module),
            1,
            log_buf,
            log_size,
            None,
            -1,
        )
    if fd < 0:
        err = ct.get_errno() or -fd
        text = log_buf.value.decode(errors="replace")
        raise VerifierError(gadget.path, spec.function, err, text or os.strerror(err))
    bpf.funcs[fn] = bcc.BPF.Function(bpf, fn, fd)
    return LoadedProgram(spec, fd)


def load_sync(
    gadget: Gadget,
    *,
    skipped: Sequence[SkippedProgram] = (),
    extra_source: Sequence[str] = (),
    cflags: Sequence[str] = (),
    usdt_contexts: Sequence[Any] = (),
    padding: bool = False,
) -> LoadedGadget:
    """Compile and load (blocking). Use ``load_gadget`` from trio."""
    bcc = _bpf_module()
    process_headers().warn_if_mismatched()
    readers = check_targets(gadget, skipped)
    # Every record written to a buffer gets its origin in front (engine/gadget/origin.py).
    outputs = rewrite_outputs(attrs.evolve(gadget, scan=expand_iter_output(gadget.scan)))
    text = full_source(outputs.gadget, [origin_prelude(), *readers, *extra_source])
    with _COMPILE_LOCK, _captured_stderr() as messages:
        try:
            bpf = _compile_only()(text=text, cflags=list(cflags), usdt_contexts=list(usdt_contexts))
        except Exception as exc:  # bcc raises bare Exception("Failed to compile ...")
            failed: Exception | None = exc
        else:
            failed = None
    shown = outputs.user_messages(messages)
    if failed is not None:
        btf = _btf_when_headers_mismatch()
        explained = shown if btf is None else list(explain(shown, btf))
        raise CompileError(gadget.path, "\n".join(explained)) from failed
    if shown:
        # Warnings from the compiler: the user's to see.
        log.warning("%s: compiler says:\n%s", gadget.path, "\n".join(shown))
    skipped = [*skipped, *_compiled_out(bpf, gadget, skipped)]
    skip = {s.spec.function for s in skipped}
    loaded: dict[str, LoadedProgram] = {}
    try:
        for spec in gadget.programs:
            if spec.function not in skip:
                loaded[spec.function] = _load_one(bcc, bpf, gadget, spec)
    except BaseException:
        bpf.cleanup()
        raise
    return LoadedGadget(gadget, bpf, loaded, tuple(skipped), outputs=outputs.maps, padding=padding)


def _compiled_out(
    bpf: Any, gadget: Gadget, skipped: Sequence[SkippedProgram]
) -> list[SkippedProgram]:
    """Programs whose definition the preprocessor left out (``#ifdef LATENCY`` around one, as
    bcc's tools write them): the source declares them, the module has no such function."""
    lib = libbcc.lib()
    skip = {s.spec.function for s in skipped}
    out = []
    for spec in gadget.programs:
        if spec.function not in skip and not lib.bpf_function_start(
            bpf.module, spec.function.encode()
        ):
            reason = "not compiled: the preprocessor left its definition out (#if/#ifdef)"
            log.warning("%s:%d: program %s %s", gadget.path, spec.line, spec.function, reason)
            out.append(SkippedProgram(spec, reason))
    return out


async def load_gadget(gadget: Gadget, **kwargs: Any) -> LoadedGadget:
    """Compile and load in a worker thread.

    The thread is not abandoned on cancellation: the call returns its result, which the
    caller then owns and must close, so nothing loaded is ever orphaned.
    """
    return await trio.to_thread.run_sync(functools.partial(load_sync, gadget, **kwargs))
