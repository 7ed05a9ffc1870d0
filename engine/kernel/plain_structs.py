"""Plain kernel struct types read through the running kernel's true layouts.

bcc's programs name kernel structs as the headers do: ``struct task_struct *t;
t->real_parent->tgid``. On a kernel whose headers bcc does not have (here: 6.18 with
Debian's 6.1 headers) those offsets are the headers' kernel's, not this one's. So, when the
headers do not match, every ``struct NAME`` (or ``union NAME``) in the gadget's code whose
type the kernel's BTF describes becomes ``struct NAME__btf``, which engine.kernel.layouts
defines from BTF with every member at its true offset. The text changes only within lines,
so compiler messages keep the gadget's line numbers; bcc then turns ``a->b->c`` into probe
reads through the true layouts as it would through the headers' ones.

Left alone: types the gadget defines itself, bcc's generated tracepoint records
(``tracepoint__C__N``), the BPF ABI's own types (``__sk_buff``, ``bpf_*``, ``pt_regs``, whose
layout every kernel shares), the kernel types that bcc's helper prototypes name
(``seq_file``), and types whose bitfields the gadget reads (true layouts cannot place a
bitfield; such types are mostly the wire formats of the UAPI, ``struct iphdr``'s ``ihl``,
the same on every kernel).

A member the running kernel does not have is a compile error; ``explain`` adds a line naming
the struct, the member and the kernel.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator

from engine.errors import BtfError
from engine.gadget.scanner import SourceScan
from engine.kernel.btf import Btf
from engine.kernel.layout_requests import SUFFIX
from engine.kernel.layouts import KERNEL_TAGS, bitfield_names

_TYPE = re.compile(r"\b(struct|union)(\s+)([A-Za-z_]\w*)\b")
_DEFINED = re.compile(r"\b(?:struct|union)\s+([A-Za-z_]\w*)\s*\{")
_MEMBER = re.compile(r"(?:->|\.)\s*([A-Za-z_]\w*)")
_KEEP_PREFIXES = ("__", "bpf_", "tracepoint__")
_KEEP = frozenset({"pt_regs", *KERNEL_TAGS})
_NO_MEMBER = re.compile(r"no member named '(\w+)' in '(?:struct|union) (\w+?)" + SUFFIX + r"\d*'")
_INCOMPLETE = re.compile(r"incomplete definition of type '(?:struct|union) (\w+?)" + SUFFIX)


def plain_names(scan: SourceScan, btf: Btf) -> frozenset[str]:
    """The struct and union names in ``scan`` that are to be read through true layouts."""
    text = scan.with_directives
    own = {m.group(1) for m in _DEFINED.finditer(text)}
    read = {m.group(1) for m in _MEMBER.finditer(text)}
    out = set()
    for name in {m.group(3) for m in _TYPE.finditer(text)} - own - _KEEP:
        if name.startswith(_KEEP_PREFIXES) or name.endswith(SUFFIX):
            continue
        found = btf.composite(name)
        if found is not None and read.isdisjoint(bitfield_names(btf, found)):
            out.add(name)
    return frozenset(out)


def rewrite_plain_structs(scan: SourceScan, btf: Btf) -> SourceScan:
    """``scan`` with each plain kernel struct type renamed to its true layout's; the same
    scan when there is none. Comments and string literals are left as they are."""
    names = plain_names(scan, btf)
    if not names:
        return scan
    source = scan.source
    out: list[str] = []
    at = 0
    for match in _TYPE.finditer(scan.with_directives):
        if match.group(3) in names:
            out.append(source[at : match.end()])
            out.append(SUFFIX)
            at = match.end()
    out.append(source[at:])
    return SourceScan.of("".join(out))


def explain(messages: Iterable[str], btf: Btf) -> Iterator[str]:
    """The compiler's messages, each error about a true layout followed by what it means."""
    release = os.uname().release
    for line in messages:
        yield line
        missing = _NO_MEMBER.search(line)
        if missing is not None:
            member, struct = missing.groups()
            yield f"engine: {_member_note(btf, struct, member, release)}"
            continue
        incomplete = _INCOMPLETE.search(line)
        if incomplete is not None:
            yield (
                f"engine: struct {incomplete.group(1)} is only declared here: the engine "
                "defines the structs a gadget names and those it reaches with '->'; name it "
                f"(struct {incomplete.group(1)} *p = ...) to read it"
            )


def _member_note(btf: Btf, struct: str, member: str, release: str) -> str:
    try:
        btf.member_offset(struct, [member])
    except BtfError:
        return f"struct {struct} has no member '{member}' in the running kernel ({release})"
    # It exists, but true layouts leave out what C cannot place at a chosen bit.
    return (
        f"{struct}.{member} is a bitfield in the running kernel ({release}), which true "
        "layouts leave out; read the bytes that hold it"
    )
