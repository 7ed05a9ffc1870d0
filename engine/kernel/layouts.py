"""True kernel struct layouts for bcc gadgets, written as C from the kernel's BTF.

The BTF (engine.kernel.btf) gives every member's true offset; this module writes C
definitions that reproduce those offsets exactly, for the types a gadget asks for:

- `struct task_struct__btf` (any `NAME__btf` in the gadget) becomes a definition of the
  kernel's `NAME` with every member at its true offset;
- `struct bpf_iter__task` (any `bpf_iter__TARGET` iterator context) is defined from BTF as
  `bpf_iter__TARGET__btf` and the name is redirected to it with a `#define`;
- what a defined struct points to is forward-declared, and defined too when the gadget goes
  through that member with ``->`` (``task->mm->arg_start``, ``upid.ns->level``), so chains of
  pointers read true layouts all the way.

What a gadget asks for is read from its scan (engine.gadget.scanner): names in comments and
literals are not requests, names in macro definitions are.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import attrs

from engine.errors import UnknownBtfTypeError
from engine.gadget.scanner import SourceScan
from engine.kernel.btf import (
    COMPOSITE,
    INT_BOOL,
    INT_CHAR,
    INT_SIGNED,
    TRANSPARENT,
    VMLINUX_BTF,
    Btf,
    BtfType,
    Kind,
    Member,
)
from engine.kernel.layout_requests import ITER_PREFIX, SUFFIX, Request, Requests

logger = logging.getLogger(__name__)


@attrs.frozen
class _Layout:
    """How a composite is emitted: packed or not, and the alignment C will give it."""

    packed: bool
    align: int


# Pointees kept as the kernel headers' own type: gadgets only pass them to helpers
# (bpf_seq_write, bpf_seq_printf) whose prototypes in bcc's helpers.h name the kernel tag.
KERNEL_TAGS = frozenset({"seq_file"})
_INDENT = "    "


@attrs.define
class _Generator:
    """Writes C definitions of composites, dependencies first, pointees forward-declared."""

    btf: Btf
    # Pointer members the sources go through with "->": their pointees are defined too.
    follow: frozenset[str] = frozenset()
    pointees: list[tuple[str, BtfType]] = attrs.field(factory=list)
    # tag -> type id, so two different BTF types with one name get distinct tags.
    _tags: dict[str, int] = attrs.field(factory=dict)
    _tag_of: dict[int, str] = attrs.field(factory=dict)
    _forward: dict[str, None] = attrs.field(factory=dict)
    _defined: set[int] = attrs.field(factory=set)
    _definitions: list[str] = attrs.field(factory=list)
    _layouts: dict[int, _Layout] = attrs.field(factory=dict)

    def claim(self, name: str, t: BtfType) -> str:
        """Give `t` the tag `name__btf` (or a numbered variant if another type holds it)."""
        known = self._tag_of.get(t.type_id)
        if known is not None:
            return known
        tag = name + SUFFIX
        if tag in self._tags:
            tag = f"{name}{SUFFIX}{t.type_id}"
        self._tags[tag] = t.type_id
        self._tag_of[t.type_id] = tag
        return tag

    def define(self, t: BtfType, name: str) -> str:
        """Define composite `t` (named `name`) after what it embeds; returns `struct TAG`."""
        tag = self.claim(name, t)
        keyword = _keyword(t)
        if t.type_id not in self._defined:
            self._defined.add(t.type_id)
            lines = [f"{keyword} {tag} {{", *self._body(t, 1), f"}}{self._attributes(t)};"]
            self._definitions.append("\n".join(lines))
        return f"{keyword} {tag}"

    def text(self) -> str:
        forward = [f"{decl};" for decl in self._forward]
        return "\n".join([*forward, *self._definitions]) + "\n"

    def _body(self, t: BtfType, depth: int) -> list[str]:
        indent = _INDENT * depth
        lines: list[str] = []
        cursor = 0
        for m in t.members:
            if self._is_bitfield(m):
                # C cannot place a bitfield at a chosen bit; its bytes stay in padding.
                continue
            offset = m.bit_offset // 8
            if t.kind is Kind.STRUCT:
                if offset < cursor:
                    logger.debug("%s.%s overlaps the member before it; left out", t.name, m.name)
                    continue
                if offset > cursor:
                    lines.append(f"{indent}char __btf_pad_{cursor}[{offset - cursor}];")
                cursor = offset + self._sizeof(m.type_id)
            lines.extend(self._member(m, depth))
        if t.kind is Kind.STRUCT and cursor < t.size:
            lines.append(f"{indent}char __btf_pad_{cursor}[{t.size - cursor}];")
        if t.kind is Kind.UNION and self._natural_size(t) < t.size:
            lines.append(f"{indent}char __btf_size[{t.size}];")
        return lines

    def _member(self, m: Member, depth: int) -> list[str]:
        indent = _INDENT * depth
        dims = ""
        type_id = m.type_id
        t = self.btf.resolve(type_id)
        while t.kind is Kind.ARRAY:
            dims += f"[{t.nelems}]"
            type_id = t.ref
            t = self.btf.resolve(type_id)
        declarator = f"{m.name}{dims}"
        if t.kind in COMPOSITE:
            name = self._composite_name(type_id)
            if name is None or not m.name:
                # Anonymous composites (and anonymous members) are written inline.
                head = f"{indent}{_keyword(t)} {{"
                tail = f"{indent}}}{self._attributes(t)}"
                body = self._body(t, depth + 1)
                return [head, *body, f"{tail} {declarator};" if declarator else f"{tail};"]
            return [f"{indent}{self.define(t, name)} {declarator};"]
        if t.kind is Kind.PTR:
            base, stars = self._pointer(t.ref)
            if m.name in self.follow and stars == 1:
                self._follow(t.ref)
            return [f"{indent}{base} {'*' * stars}{declarator};"]
        scalar, bytes_only = _scalar(t)
        if bytes_only:
            return [f"{indent}__u8 {declarator}[{t.size}];"]
        return [f"{indent}{scalar} {declarator};"]

    def _pointer(self, type_id: int) -> tuple[str, int]:
        """Base type and star count of a pointer to `type_id`."""
        stars = 1
        while True:
            t = self.btf.resolve(type_id)
            if t.kind is not Kind.PTR:
                break
            stars += 1
            type_id = t.ref
        if t.kind in COMPOSITE or t.kind is Kind.FWD:
            name = self._composite_name(type_id)
            if name is None:
                return "void", stars
            if name in KERNEL_TAGS:
                return f"{_keyword(t)} {name}", stars
            tag = self.claim(name, t)
            self._forward[f"{_keyword(t)} {tag}"] = None
            return f"{_keyword(t)} {tag}", stars
        if t.kind in {Kind.INT, Kind.ENUM, Kind.ENUM64, Kind.FLOAT}:
            scalar, bytes_only = _scalar(t)
            return ("void" if bytes_only else scalar), stars
        # void, functions, arrays: an untyped pointer is all a gadget can use.
        return "void", stars

    def _follow(self, type_id: int) -> None:
        pointee = self.btf.resolve(type_id)
        name = self._composite_name(type_id)
        if pointee.kind not in COMPOSITE or not name or name in KERNEL_TAGS:
            return
        if pointee.type_id not in self._defined:
            self.pointees.append((name, pointee))

    def _composite_name(self, type_id: int) -> str | None:
        """The composite's own name, else the nearest typedef naming it, else None."""
        typedef_name: str | None = None
        t = self.btf.type(type_id)
        while t.kind in TRANSPARENT:
            if t.kind is Kind.TYPEDEF and typedef_name is None:
                typedef_name = t.name
            t = self.btf.type(t.ref)
        return t.name or typedef_name

    def _is_bitfield(self, m: Member) -> bool:
        return is_bitfield(self.btf, m)

    def _sizeof(self, type_id: int) -> int:
        t = self.btf.resolve(type_id)
        if t.kind is Kind.PTR:
            return 8
        if t.kind is Kind.ARRAY:
            return t.nelems * self._sizeof(t.ref)
        return t.size

    def _alignof(self, type_id: int) -> int:
        t = self.btf.resolve(type_id)
        if t.kind is Kind.PTR:
            return 8
        if t.kind is Kind.ARRAY:
            return self._alignof(t.ref)
        if t.kind in COMPOSITE:
            return self._layout(t).align
        _, bytes_only = _scalar(t)
        return 1 if bytes_only or t.size == 0 else min(t.size, 16)

    def _natural_size(self, t: BtfType) -> int:
        return max((self._sizeof(m.type_id) for m in self._placed(t)), default=0)

    def _placed(self, t: BtfType) -> Iterator[Member]:
        return (m for m in t.members if not self._is_bitfield(m))

    def _layout(self, t: BtfType) -> _Layout:
        known = self._layouts.get(t.type_id)
        if known is not None:
            return known
        placed = list(self._placed(t))
        natural = max((self._alignof(m.type_id) for m in placed), default=1)
        aligned = all((m.bit_offset // 8) % self._alignof(m.type_id) == 0 for m in placed)
        if aligned and t.size % natural == 0:
            layout = _Layout(packed=False, align=natural)
        else:
            # A packed kernel struct: pack ours too, keeping the largest alignment that
            # does not round its size up.
            align = natural
            while t.size % align:
                align //= 2
            layout = _Layout(packed=True, align=align)
        self._layouts[t.type_id] = layout
        return layout

    def _attributes(self, t: BtfType) -> str:
        layout = self._layout(t)
        if not layout.packed:
            return ""
        return f" __attribute__((packed, aligned({layout.align})))"


def is_bitfield(btf: Btf, m: Member) -> bool:
    """Whether ``m`` is a bitfield (which C cannot place at a chosen bit: left out)."""
    if m.bitfield_size:
        return True
    # Without kind_flag, a bitfield shows as an odd bit offset or a narrow INT.
    t = btf.resolve(m.type_id)
    if m.bit_offset % 8:
        return True
    return t.kind is Kind.INT and (t.int_bit_offset != 0 or t.int_bits != t.size * 8)


def bitfield_names(btf: Btf, t: BtfType) -> Iterator[str]:
    """The names of ``t``'s bitfields, those of its anonymous members included."""
    for m in t.members:
        if not m.name and btf.resolve(m.type_id).kind in COMPOSITE:
            yield from bitfield_names(btf, btf.resolve(m.type_id))
        elif is_bitfield(btf, m):
            yield m.name


def _keyword(t: BtfType) -> str:
    if t.kind is Kind.UNION or (t.kind is Kind.FWD and t.kind_flag):
        return "union"
    return "struct"


def _scalar(t: BtfType) -> tuple[str, bool]:
    """C spelling of an INT, ENUM or FLOAT; True when only a byte array can stand for it."""
    if t.kind is Kind.INT:
        if t.int_encoding & INT_BOOL:
            return "_Bool", False
        if t.size == 1 and (t.int_encoding & INT_CHAR or t.name == "char"):
            return "char", False
        signed = bool(t.int_encoding & INT_SIGNED)
        if t.size == 16:
            return ("__int128" if signed else "unsigned __int128"), False
        if t.size in {1, 2, 4, 8}:
            return f"__{'s' if signed else 'u'}{t.size * 8}", False
        return "", True
    if t.kind in {Kind.ENUM, Kind.ENUM64}:
        # kind_flag marks a signed enum; enums become plain integers of their size.
        if t.size in {1, 2, 4, 8}:
            return f"__{'s' if t.kind_flag else 'u'}{t.size * 8}", False
        return "", True
    if t.kind is Kind.FLOAT and t.size in {4, 8}:
        return ("float" if t.size == 4 else "double"), False
    return "", True


def _lookup(btf: Btf, request: Request, path: str | None) -> BtfType:
    """The composite called `request.name`: a struct or union, else a typedef of one."""
    found = btf.composite(request.name)
    if found is None:
        raise UnknownBtfTypeError(request.name, path=path, line=request.line)
    return found


def generate(btf: Btf, *scans: SourceScan, gadget_path: str | None = None) -> str:
    """C definitions for the `__btf` types and iterator contexts that the sources use.

    An unknown type is reported at its line in the scan that first names it.
    """
    return _generate(btf, Requests.of(scans), gadget_path)


def _generate(btf: Btf, requests: Requests, gadget_path: str | None) -> str:
    if not requests:
        return ""
    gen = _Generator(btf, requests.follow)
    wanted = [(r.name, _lookup(btf, r, gadget_path)) for r in requests.names]
    context_types = [(r.name, _lookup(btf, r, gadget_path)) for r in requests.contexts]
    # Requested names claim their plain tags before anything reached recursively can.
    for name, t in wanted + context_types:
        gen.claim(name, t)
    for name, t in wanted:
        gen.define(t, name)
    for name, t in context_types:
        gen.define(t, name)
    for name, t in wanted + context_types:
        if name.startswith(ITER_PREFIX):
            # Define what an iterator context points to, so `ctx->task->pid` compiles
            # without the gadget naming `task_struct__btf` itself.
            for pointee_name, pointee in _context_pointees(btf, t):
                gen.define(pointee, pointee_name)
    while gen.pointees:
        name, t = gen.pointees.pop()
        gen.define(t, name)
    defines = "".join(f"#define {r.name} {r.name}{SUFFIX}\n" for r in requests.contexts)
    return (
        "/* True kernel layouts from BTF, generated by engine.kernel.layouts */\n"
        + gen.text()
        + defines
    )


def _context_pointees(btf: Btf, ctx: BtfType) -> Iterator[tuple[str, BtfType]]:
    """Named composites that an iterator context's pointer members point to."""
    for m in ctx.members:
        t = btf.resolve(m.type_id)
        if t.kind in COMPOSITE and not m.name:
            # The kernel wraps each context pointer in an anonymous union.
            yield from _context_pointees(btf, t)
        elif t.kind is Kind.PTR:
            pointee = btf.resolve(t.ref)
            if pointee.kind in COMPOSITE and pointee.name and pointee.name not in KERNEL_TAGS:
                yield pointee.name, pointee


def btf_prelude(
    *scans: SourceScan,
    btf_path: Path = VMLINUX_BTF,
    btf: Btf | None = None,
    gadget_path: str | None = None,
) -> str:
    """C text to put before the gadget: true layouts for what it names, or "" if nothing.

    ``btf``, when given, is the kernel's BTF already read (else it is read from ``btf_path``).
    Raises `UnknownBtfTypeError` (naming `gadget_path` and the line, when given) for a type
    the kernel does not have, `BtfError` when the BTF file is unreadable or malformed.
    """
    requests = Requests.of(scans)
    if not requests:
        # Reading several MB of BTF is wasted on gadgets that ask for nothing.
        return ""
    return _generate(btf or Btf.from_file(btf_path), requests, gadget_path)
