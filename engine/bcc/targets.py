"""Finding what static programs attach to, with one clear message when it is not there.

Everything here runs before a gadget is compiled, so a misspelled function, library, symbol
or USDT probe fails in milliseconds instead of after bcc's compile. Each lookup raises
`TargetMissing` with the message a user needs; the loader adds file, line and program.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from pathlib import Path

import attrs

from engine.bcc.elf import ET_EXEC, ElfError, ElfFile
from engine.gadget.model import ProgramSpec
from engine.gadget.sections import Kind
from engine.kernel.libbpf_btf import BTF_KIND_FUNC, BTF_KIND_TYPEDEF, btf_id

TRACEFS = Path("/sys/kernel/tracing")
KALLSYMS = Path("/proc/kallsyms")

# Names people write for libraries whose file name differs from "lib" + name.
LIBRARY_ALIASES = {
    "libc": "libc.so.6",
    "c": "libc.so.6",
    "libstdc++": "libstdc++.so.6",
    "libstdcxx": "libstdc++.so.6",
    "libpthread": "libpthread.so.0",
    "libm": "libm.so.6",
}


class TargetMissing(LookupError):
    """What a program should attach to is not there; the message says what was searched."""


@attrs.frozen
class UprobeTarget:
    """A resolved user-space attach point: a file and offsets in it."""

    path: Path
    offset: int


@attrs.frozen
class UsdtLocation:
    offset: int  # file offset of the probe's instruction
    vaddr: int  # link-time address, as the program counter shows it in a non-PIE executable
    args: str


@attrs.frozen
class UsdtTarget:
    """A USDT probe: every place it sits, its semaphore and how to read its arguments."""

    path: Path
    provider: str
    name: str
    locations: tuple[UsdtLocation, ...]
    semaphore_offset: int  # 0 when the probe has no semaphore
    position_dependent: bool  # an executable linked at fixed addresses (ET_EXEC)


def ldconfig_entries() -> list[tuple[str, Path]]:
    """The dynamic linker's cache as (soname, path), as `ldconfig -p` prints it."""
    try:
        out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        out = ""
    entries = []
    for line in out.splitlines()[1:]:
        name, _, rest = line.strip().partition(" (")
        arch, _, path = rest.partition(") => ")
        # The cache lists other ABIs too; the engine's programs run on x86-64 binaries.
        if path and ("x86-64" in arch or "64bit" in arch):
            entries.append((name.strip(), Path(path.strip())))
    return entries


def resolve_library(name: str, entries: Iterable[tuple[str, Path]] | None = None) -> Path:
    """An absolute path as given, or a library name found the way the dynamic linker would."""
    if name.startswith("/"):
        path = Path(name)
        if not path.is_file():
            raise TargetMissing(f"no file {name}")
        return path
    cache = list(ldconfig_entries() if entries is None else entries)
    wanted = _library_candidates(name)
    for candidate in wanted:
        for soname, path in cache:
            if soname == candidate:
                return path
    # "libfoo" matches "libfoo.so.3": the linker's cache holds sonames with versions.
    for candidate in wanted:
        for soname, path in cache:
            if soname.startswith(candidate + ".so"):
                return path
    raise TargetMissing(
        f"no library {name!r} in the dynamic linker's cache (ldconfig -p, /etc/ld.so.cache); "
        f"searched for {', '.join(repr(w) for w in wanted)}; give an absolute path instead"
    )


def _library_candidates(name: str) -> list[str]:
    out = [LIBRARY_ALIASES[name]] if name in LIBRARY_ALIASES else []
    out.append(name)
    if not name.startswith("lib"):
        out.append("lib" + name)
    return list(dict.fromkeys(out))


def _read_elf(path: Path) -> ElfFile:
    try:
        return ElfFile.read(path)
    except OSError as exc:
        raise TargetMissing(f"cannot read {path}: {exc.strerror}") from exc
    except ElfError as exc:
        raise TargetMissing(str(exc)) from exc


def find_uprobe(file: str, symbol: str) -> UprobeTarget:
    path = resolve_library(file)
    elf = _read_elf(path)
    for name, address in elf.function_symbols():
        if name == symbol:
            return UprobeTarget(path, elf.file_offset(address))
    raise TargetMissing(f"no function symbol {symbol!r} in {path} (searched .symtab and .dynsym)")


def find_usdt(file: str, provider: str, name: str) -> UsdtTarget:
    path = resolve_library(file)
    elf = _read_elf(path)
    notes = list(elf.usdt_notes())
    mine = [n for n in notes if n.provider == provider and n.name == name]
    if not mine:
        known = sorted({f"{n.provider}:{n.name}" for n in notes})
        listed = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "")
        raise TargetMissing(
            f"no USDT probe {provider}:{name} in {path}"
            + (f" (it has: {listed})" if known else " (it has no USDT probes)")
        )
    # Prelinking moves code after the notes were written: the base section shows by how much.
    actual_base = elf.stapsdt_base()
    locations = []
    for note in mine:
        shift = actual_base - note.base if actual_base is not None and note.base else 0
        vaddr = note.pc + shift
        locations.append(UsdtLocation(elf.file_offset(vaddr), vaddr, note.args))
    semaphore = mine[0].semaphore
    return UsdtTarget(
        path=path,
        provider=provider,
        name=name,
        locations=tuple(locations),
        semaphore_offset=elf.file_offset(semaphore) if semaphore else 0,
        position_dependent=elf.type == ET_EXEC,
    )


def kernel_function_exists(name: str) -> bool:
    """Whether kprobes can find ``name``: a text symbol of the kernel or a module."""
    pattern = re.compile(rf"^[0-9a-f]+ [tTwW] {re.escape(name)}(\s|$)", re.MULTILINE)
    try:
        return pattern.search(KALLSYMS.read_text()) is not None
    except OSError:
        return False


def btf_has(name: str, *, function: bool) -> bool | None:
    """Whether the kernel's BTF has a function (or typedef) ``name``; None when it has no BTF."""
    found = btf_id(name, BTF_KIND_FUNC if function else BTF_KIND_TYPEDEF)
    return None if found is None else found > 0


def check_target(spec: ProgramSpec) -> None:
    """Raise `TargetMissing` when ``spec``'s attach point does not exist here."""
    kind, parts = spec.kind, spec.section.parts
    if kind in (Kind.KPROBE, Kind.KRETPROBE):
        if not kernel_function_exists(parts[0]):
            raise TargetMissing(f"no kernel function {parts[0]!r} in {KALLSYMS}")
    elif kind in (Kind.FENTRY, Kind.FEXIT):
        if btf_has(parts[0], function=True) is False:
            raise TargetMissing(f"no kernel function {parts[0]!r} in the kernel's BTF")
    elif kind is Kind.LSM:
        if btf_has(f"bpf_lsm_{parts[0]}", function=True) is False:
            raise TargetMissing(
                f"no LSM hook {parts[0]!r} (no bpf_lsm_{parts[0]} in the kernel's BTF)"
            )
    elif kind is Kind.RAW_TRACEPOINT:
        # Every raw tracepoint has a btf_trace_<name> typedef in the kernel's BTF.
        if btf_has(f"btf_trace_{parts[0]}", function=False) is False:
            raise TargetMissing(f"no raw tracepoint {parts[0]!r} (no btf_trace_{parts[0]} in BTF)")
    elif kind is Kind.TRACEPOINT:
        category, name = parts
        if not (TRACEFS / "events" / category / name / "id").exists():
            raise TargetMissing(f"no tracepoint {category}/{name} in {TRACEFS / 'events'}")
    elif kind in (Kind.UPROBE, Kind.URETPROBE):
        find_uprobe(parts[0], parts[1])
    elif kind is Kind.USDT:
        find_usdt(*parts)
