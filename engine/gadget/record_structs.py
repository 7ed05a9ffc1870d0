"""The struct each ring or perf buffer carries, read from the gadget's source before compiling.

bcc tells the engine the fields of a submitted struct only once the gadget is compiled
(engine.events.decode). Checks that must come before compiling (``--filter``, ``--fields``)
read the same struct from the source instead: the variable given to ``MAP.perf_submit``,
``MAP.ringbuf_output`` or ``ITER_OUTPUT(MAP, ...)``, or assigned from
``MAP.ringbuf_reserve``, is declared ``struct NAME``; that struct's members, in order, are the
record's fields. A map whose struct cannot be read so (a typedef, a nested struct or union,
a macro) maps to None: its fields are known only after compiling.
"""

from __future__ import annotations

import re

from engine.gadget.model import Gadget

_BUFFER_MAP = re.compile(r"\b(?:BPF_RINGBUF_OUTPUT|BPF_PERF_OUTPUT)\s*\(\s*(\w+)")
_RESERVE = re.compile(r"struct\s+(\w+)\s*\*\s*\w+\s*=\s*(\w+)\s*\.\s*ringbuf_reserve\s*\(")
_SUBMIT = re.compile(
    r"\b(\w+)\s*\.\s*(?:perf_submit\s*\(\s*[^,()]+,|ringbuf_output\s*\()\s*&?\s*(\w+)"
    r"|\bITER_OUTPUT\s*\(\s*(\w+)\s*,[^,()]+,\s*&?\s*(\w+)"
)
_MEMBER = re.compile(
    r"^(?P<type>[A-Za-z_][\w\s*]*?)\s*\b(?P<name>[A-Za-z_]\w*)\s*(?:\[(?P<n>[^\]]+)\])?$"
)
_DEFINE = re.compile(r"^[ \t]*#[ \t]*define[ \t]+(\w+)[ \t]+(\d+)[ \t]*$", re.MULTILINE)


def buffer_structs(gadget: Gadget) -> dict[str, tuple[tuple[str, str], ...] | None]:
    """Per buffer map, its record's members as (name, C type) pairs (arrays as ``T[N]``);
    None for a map whose struct the source does not show plainly."""
    code = gadget.scan.code
    maps = {m.group(1) for m in _BUFFER_MAP.finditer(code)}
    struct_of: dict[str, str] = {}
    for match in _RESERVE.finditer(code):
        struct_of.setdefault(match.group(2), match.group(1))
    for match in _SUBMIT.finditer(code):
        name = match.group(1) or match.group(3)
        variable = match.group(2) or match.group(4)
        declared = _declared_struct(code[: match.start()], variable)
        if declared is not None:
            struct_of.setdefault(name, declared)
    sizes = dict(_DEFINE.findall(gadget.source))
    return {name: _members(code, struct_of.get(name), sizes) for name in sorted(maps)}


def _declared_struct(before: str, variable: str) -> str | None:
    last = None
    for match in re.finditer(
        rf"struct\s+(\w+)\s*\*?\s*\b{re.escape(variable)}\b\s*[=;\[,)]", before
    ):
        last = match.group(1)
    return last


def _members(
    code: str, struct: str | None, sizes: dict[str, str]
) -> tuple[tuple[str, str], ...] | None:
    if struct is None:
        return None
    match = re.search(rf"\bstruct\s+{re.escape(struct)}\s*\{{([^{{}}]*)\}}", code)
    if match is None:
        return None
    members: list[tuple[str, str]] = []
    for declaration in match.group(1).split(";"):
        text = " ".join(declaration.split())
        if not text:
            continue
        member = _MEMBER.match(text)
        if member is None or "," in text:
            return None
        ctype = member.group("type").strip()
        count = member.group("n")
        if count is not None:
            count = count.strip()
            # An array's size only matters to tell strings and MAC addresses from lists.
            ctype = f"{ctype}[{count if count.isdigit() else sizes.get(count, '2')}]"
        members.append((member.group("name"), ctype))
    return tuple(members) or None
