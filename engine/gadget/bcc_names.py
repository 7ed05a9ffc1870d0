"""bcc's naming conventions: a function whose name says what kind of program it is.

bcc attaches a function named ``kprobe__F``, ``kretprobe__F``, ``tracepoint__C__N``,
``raw_tracepoint__N``, ``kfunc__F``, ``kretfunc__F`` or ``lsm__H`` by itself. Its helpers.h
macros define such functions: ``TRACEPOINT_PROBE(C, N)``, ``RAW_TRACEPOINT_PROBE(N)``,
``KFUNC_PROBE(F, ...)``, ``KRETFUNC_PROBE(F, ...)``, ``LSM_PROBE(H, ...)`` (found by the
scanner, engine.gadget.scanner). For the engine each of them is the program that the section
``kprobe/F``, ``tracepoint/C/N``... would declare, so it gets the same checks, feature probe,
records and plan; the engine, not bcc, loads and attaches it.

Pure code, no I/O.
"""

from __future__ import annotations

from engine.gadget.sections import SectionSyntaxError

# Name prefix -> the section type it stands for.
_PREFIXES = (
    ("kprobe__", "kprobe"),
    ("kretprobe__", "kretprobe"),
    ("tracepoint__", "tracepoint"),
    ("raw_tracepoint__", "raw_tracepoint"),
    ("kfunc__", "fentry"),
    ("kretfunc__", "fexit"),
    ("lsm__", "lsm"),
)
# bcc attaches kprobe__sys_F to the syscall's entry point, which x86-64 kernels since 4.17
# call __x64_sys_F (bcc's fix_syscall_fnname).
_SYSCALL = "sys_"
_SYSCALL_ENTRY = "__x64_sys_"

CONVENTIONS = tuple(prefix + "..." for prefix, _ in _PREFIXES)


def section_of_name(function: str) -> str | None:
    """The section text that ``function``'s name stands for, None for a name without a
    convention; SectionSyntaxError when the name has a prefix but no valid target."""
    for prefix, kind in _PREFIXES:
        if not function.startswith(prefix):
            continue
        rest = function[len(prefix) :]
        if not rest:
            raise SectionSyntaxError(f"nothing follows {prefix!r}")
        if kind == "tracepoint":
            category, sep, name = rest.partition("__")
            if not (sep and category and name):
                raise SectionSyntaxError("expected tracepoint__<category>__<name>")
            return f"tracepoint/{category}/{name}"
        if kind in ("kprobe", "kretprobe") and rest.startswith(_SYSCALL):
            rest = _SYSCALL_ENTRY + rest[len(_SYSCALL) :]
        return f"{kind}/{rest}"
    return None
