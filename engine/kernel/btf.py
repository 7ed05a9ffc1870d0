"""True kernel struct layouts for bcc gadgets, read from the running kernel's BTF.

bcc compiles gadgets against whatever kernel headers it finds, which may belong to another
kernel version (here: 6.1 headers for a 6.18 kernel), so `task->pid` can read the wrong
offset. `/sys/kernel/btf/vmlinux` describes the running kernel exactly. This module reads the
raw BTF format (see the kernel's Documentation/bpf/btf.rst) and writes C definitions that
reproduce BTF offsets exactly, for the types a gadget asks for:

- `struct task_struct__btf` (any `NAME__btf` in the gadget) becomes a definition of the
  kernel's `NAME` with every member at its true offset;
- `struct bpf_iter__task` (any `bpf_iter__TARGET` iterator context) is defined from BTF as
  `bpf_iter__TARGET__btf` and the name is redirected to it with a `#define`.

Only the types a gadget names are decoded: one pass over the type section indexes where each
type starts (about 40 ms for the 5.5 MB, 126k-type vmlinux BTF of 6.18), names are looked up
in the string section, and types are decoded on demand. That is fast enough that nothing is
cached on disk.
"""

from __future__ import annotations

import enum
import logging
import re
import struct
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path

import attrs

from engine.errors import EngineError

logger = logging.getLogger(__name__)

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")

# The suffix a gadget adds to a type name to ask for the kernel's true layout.
SUFFIX = "__btf"

_MAGIC = 0xEB9F
# btf_header: magic, version, flags, hdr_len, type_off, type_len, str_off, str_len.
_HEADER_FIELDS = "HBBIIIII"
_HEADER_SIZE = struct.calcsize("<" + _HEADER_FIELDS)
# btf_type: name_off, info, size or type.
_TYPE_SIZE = 12


class BtfError(EngineError):
    """A BTF file cannot be read or is malformed."""


class UnknownBtfTypeError(BtfError):
    """A gadget names a type that the kernel's BTF does not describe."""

    def __init__(self, name: str, *, path: str | None = None, line: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}type {name!r} is not described by the kernel's BTF")
        self.name = name
        self.path = path
        self.line = line


class Kind(enum.IntEnum):
    """BTF type kinds (the `kind` bits of `btf_type.info`)."""

    VOID = 0
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


# Bytes that follow the 12-byte `btf_type` record: a fixed part and a part per `vlen` entry.
_FIXED_TAIL = {Kind.INT: 4, Kind.ARRAY: 12, Kind.VAR: 4, Kind.DECL_TAG: 4}
_ENTRY_SIZE = {
    Kind.STRUCT: 12,
    Kind.UNION: 12,
    Kind.ENUM: 8,
    Kind.FUNC_PROTO: 8,
    Kind.DATASEC: 12,
    Kind.ENUM64: 12,
}
# Kinds that only qualify or rename another type: looked through to reach the real one.
_TRANSPARENT = frozenset({Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.TYPE_TAG})
_COMPOSITE = frozenset({Kind.STRUCT, Kind.UNION})
_INT_SIGNED = 0x1
_INT_CHAR = 0x2
_INT_BOOL = 0x4


@attrs.frozen
class Member:
    """One member of a struct or union; `bitfield_size` is 0 for ordinary members."""

    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int


@attrs.frozen
class BtfType:
    """One decoded BTF type. Fields that do not apply to a kind are 0, "" or empty."""

    type_id: int
    kind: Kind
    name: str
    kind_flag: bool = False
    # Size in bytes (INT, STRUCT, UNION, ENUM, ENUM64, FLOAT).
    size: int = 0
    # The type this one refers to (PTR, TYPEDEF, qualifiers, FUNC) or the ARRAY element type.
    ref: int = 0
    nelems: int = 0
    int_encoding: int = 0
    int_bit_offset: int = 0
    int_bits: int = 0
    members: tuple[Member, ...] = ()


@attrs.define
class Btf:
    """A BTF blob with an index of where each type starts; types are decoded on demand."""

    data: bytes
    _order: str
    _strings_start: int
    _strings_end: int
    _offsets: array[int]
    # name offset -> ids of STRUCT, UNION and TYPEDEF types with that name.
    _by_name_off: dict[int, list[int]]
    _decoded: dict[int, BtfType] = attrs.field(factory=dict)

    @classmethod
    def from_file(cls, path: Path = VMLINUX_BTF) -> Btf:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BtfError(f"cannot read BTF from {path}: {exc.strerror}") from exc
        return cls.from_bytes(data, origin=str(path))

    @classmethod
    def from_bytes(cls, data: bytes, *, origin: str = "<bytes>") -> Btf:
        if len(data) < _HEADER_SIZE:
            raise BtfError(f"{origin}: too short for a BTF header")
        # The magic tells the byte order the blob was written in.
        order = "<" if int.from_bytes(data[:2], "little") == _MAGIC else ">"
        magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
            order + _HEADER_FIELDS, data, 0
        )
        if magic != _MAGIC:
            raise BtfError(f"{origin}: not BTF (magic {magic:#06x})")
        types_start = hdr_len + type_off
        types_end = types_start + type_len
        strings_start = hdr_len + str_off
        strings_end = strings_start + str_len
        if types_end > len(data) or strings_end > len(data):
            raise BtfError(f"{origin}: sections run past the end of the file")
        offsets, by_name_off = _index_types(data, order, types_start, types_end, origin)
        return cls(
            data=data,
            order=order,
            strings_start=strings_start,
            strings_end=strings_end,
            offsets=offsets,
            by_name_off=by_name_off,
        )

    def __len__(self) -> int:
        """Number of type ids, counting the implicit void (id 0)."""
        return len(self._offsets)

    def string(self, offset: int) -> str:
        start = self._strings_start + offset
        end = self.data.find(b"\0", start, self._strings_end)
        if end == -1:
            raise BtfError(f"string offset {offset} has no end inside the string section")
        return self.data[start:end].decode(errors="replace")

    def type(self, type_id: int) -> BtfType:
        known = self._decoded.get(type_id)
        if known is None:
            known = self._decode(type_id)
            self._decoded[type_id] = known
        return known

    def named(self, name: str) -> list[BtfType]:
        """STRUCT, UNION and TYPEDEF types called `name`, in id order."""
        needle = b"\0" + name.encode() + b"\0"
        ids: list[int] = []
        # Searching the string section for the name beats decoding every type's name; a
        # blob need not deduplicate its strings, so every occurrence counts.
        pos = self.data.find(needle, self._strings_start, self._strings_end)
        while pos != -1:
            ids.extend(self._by_name_off.get(pos + 1 - self._strings_start, ()))
            pos = self.data.find(needle, pos + 1, self._strings_end)
        return [self.type(i) for i in sorted(ids)]

    def resolve(self, type_id: int) -> BtfType:
        """The type behind typedefs and qualifiers."""
        t = self.type(type_id)
        while t.kind in _TRANSPARENT:
            t = self.type(t.ref)
        return t

    def _decode(self, type_id: int) -> BtfType:
        if type_id == 0:
            return BtfType(type_id=0, kind=Kind.VOID, name="void")
        if not 0 < type_id < len(self._offsets):
            raise BtfError(f"type id {type_id} out of range")
        o = self._order
        pos = self._offsets[type_id]
        name_off, info, size_or_type = struct.unpack_from(o + "III", self.data, pos)
        kind = Kind((info >> 24) & 0x1F)
        vlen = info & 0xFFFF
        kind_flag = bool(info >> 31)
        name = self.string(name_off)
        tail = pos + _TYPE_SIZE
        if kind is Kind.INT:
            (enc,) = struct.unpack_from(o + "I", self.data, tail)
            return BtfType(
                type_id=type_id,
                kind=kind,
                name=name,
                size=size_or_type,
                int_encoding=(enc >> 24) & 0xF,
                int_bit_offset=(enc >> 16) & 0xFF,
                int_bits=enc & 0xFF,
            )
        if kind is Kind.ARRAY:
            elem, _index, nelems = struct.unpack_from(o + "III", self.data, tail)
            return BtfType(type_id=type_id, kind=kind, name=name, ref=elem, nelems=nelems)
        if kind in _COMPOSITE:
            members = tuple(
                _member(self.string(m_name), m_type, m_off, kind_flag)
                for m_name, m_type, m_off in struct.iter_unpack(
                    o + "III", self.data[tail : tail + 12 * vlen]
                )
            )
            return BtfType(
                type_id=type_id,
                kind=kind,
                name=name,
                kind_flag=kind_flag,
                size=size_or_type,
                members=members,
            )
        if kind in {Kind.ENUM, Kind.ENUM64, Kind.FLOAT}:
            return BtfType(
                type_id=type_id, kind=kind, name=name, kind_flag=kind_flag, size=size_or_type
            )
        if kind in {Kind.PTR, Kind.FUNC, Kind.VAR, Kind.DECL_TAG} | _TRANSPARENT:
            return BtfType(
                type_id=type_id, kind=kind, name=name, kind_flag=kind_flag, ref=size_or_type
            )
        # FWD, FUNC_PROTO, DATASEC: nothing a layout needs beyond the kind.
        return BtfType(type_id=type_id, kind=kind, name=name, kind_flag=kind_flag)


def _member(name: str, type_id: int, offset: int, kind_flag: bool) -> Member:
    # With kind_flag set, `offset` packs the bitfield size (top 8 bits) with the bit offset.
    if kind_flag:
        return Member(name, type_id, offset & 0xFFFFFF, offset >> 24)
    return Member(name, type_id, offset, 0)


def _index_types(
    data: bytes, order: str, start: int, end: int, origin: str
) -> tuple[array[int], dict[int, list[int]]]:
    """Where each type record starts, and named composites and typedefs by name offset."""
    head = struct.Struct(order + "II")
    offsets = array("I", [0])
    by_name_off: dict[int, list[int]] = {}
    fixed = {int(k): v for k, v in _FIXED_TAIL.items()}
    entry = {int(k): v for k, v in _ENTRY_SIZE.items()}
    indexed = {int(Kind.STRUCT), int(Kind.UNION), int(Kind.TYPEDEF)}
    last_kind = max(Kind)
    pos = start
    while pos < end:
        name_off, info = head.unpack_from(data, pos)
        kind = (info >> 24) & 0x1F
        if kind > last_kind:
            raise BtfError(f"{origin}: unknown BTF kind {kind} at byte {pos}")
        if name_off and kind in indexed:
            by_name_off.setdefault(name_off, []).append(len(offsets))
        offsets.append(pos)
        pos += _TYPE_SIZE + fixed.get(kind, 0) + (info & 0xFFFF) * entry.get(kind, 0)
    if pos != end:
        raise BtfError(f"{origin}: type section ends inside a type record")
    return offsets, by_name_off


@attrs.frozen
class _Layout:
    """How a composite is emitted: packed or not, and the alignment C will give it."""

    packed: bool
    align: int


# Pointees kept as the kernel headers' own type: gadgets only pass them to helpers
# (bpf_seq_write, bpf_seq_printf) whose prototypes in bcc's helpers.h name the kernel tag.
_KERNEL_TAGS = frozenset({"seq_file"})
_INDENT = "    "


@attrs.define
class _Generator:
    """Writes C definitions of composites, dependencies first, pointees forward-declared."""

    btf: Btf
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
        if t.kind in _COMPOSITE:
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
            return [f"{indent}{base} {'*' * stars}{declarator};"]
        scalar, bytes_only = _scalar(t)
        if bytes_only:
            return [f"{indent}__u8 {declarator}[{t.size}];"]
        return [f"{indent}{scalar} {declarator};"]

    def _pointer(self, type_id: int) -> tuple[str, int]:
        """Base type and star count of a pointer to `type_id`."""
        stars = 1
        while True:
            t = self.btf.type(type_id)
            while t.kind in _TRANSPARENT:
                t = self.btf.type(t.ref)
            if t.kind is not Kind.PTR:
                break
            stars += 1
            type_id = t.ref
        if t.kind in _COMPOSITE or t.kind is Kind.FWD:
            name = self._composite_name(type_id)
            if name is None:
                return "void", stars
            if name in _KERNEL_TAGS:
                return f"{_keyword(t)} {name}", stars
            tag = self.claim(name, t)
            self._forward[f"{_keyword(t)} {tag}"] = None
            return f"{_keyword(t)} {tag}", stars
        if t.kind in {Kind.INT, Kind.ENUM, Kind.ENUM64, Kind.FLOAT}:
            scalar, bytes_only = _scalar(t)
            return ("void" if bytes_only else scalar), stars
        # void, functions, arrays: an untyped pointer is all a gadget can use.
        return "void", stars

    def _composite_name(self, type_id: int) -> str | None:
        """The composite's own name, else the nearest typedef naming it, else None."""
        typedef_name: str | None = None
        t = self.btf.type(type_id)
        while t.kind in _TRANSPARENT:
            if t.kind is Kind.TYPEDEF and typedef_name is None:
                typedef_name = t.name
            t = self.btf.type(t.ref)
        return t.name or typedef_name

    def _is_bitfield(self, m: Member) -> bool:
        if m.bitfield_size:
            return True
        # Without kind_flag, a bitfield shows as an odd bit offset or a narrow INT.
        t = self.btf.resolve(m.type_id)
        if m.bit_offset % 8:
            return True
        return t.kind is Kind.INT and (t.int_bit_offset != 0 or t.int_bits != t.size * 8)

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
        if t.kind in _COMPOSITE:
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


def _keyword(t: BtfType) -> str:
    if t.kind is Kind.UNION or (t.kind is Kind.FWD and t.kind_flag):
        return "union"
    return "struct"


def _scalar(t: BtfType) -> tuple[str, bool]:
    """C spelling of an INT, ENUM or FLOAT; True when only a byte array can stand for it."""
    if t.kind is Kind.INT:
        if t.int_encoding & _INT_BOOL:
            return "_Bool", False
        if t.size == 1 and (t.int_encoding & _INT_CHAR or t.name == "char"):
            return "char", False
        signed = bool(t.int_encoding & _INT_SIGNED)
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


@attrs.frozen
class _Request:
    """A name the gadget uses, with the line of its first use (1-based)."""

    name: str
    line: int


_BTF_NAME = re.compile(r"\b(\w+)" + SUFFIX + r"\b")
_ITER_PREFIX = "bpf_iter__"
_ITER_CONTEXT = re.compile(r"\bstruct\s+(" + _ITER_PREFIX + r"\w+)\b")
# Comments, string and character literals: names in them are not requests.
_NOT_CODE = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.S)


def _code_only(source: str) -> str:
    """`source` with comments and literals blanked, keeping line numbers."""
    return _NOT_CODE.sub(lambda m: "\n" * m.group(0).count("\n") or " ", source)


def _first_uses(code: str, pattern: re.Pattern[str]) -> Iterable[_Request]:
    seen: dict[str, _Request] = {}
    for match in pattern.finditer(code):
        name = match.group(1)
        if name not in seen:
            seen[name] = _Request(name, code.count("\n", 0, match.start()) + 1)
    return seen.values()


def _requests(source: str) -> tuple[list[_Request], list[_Request]]:
    """What `source` asks true layouts for: `NAME` of each `NAME__btf`, iterator contexts."""
    code = _code_only(source)
    names = list(_first_uses(code, _BTF_NAME))
    contexts = [r for r in _first_uses(code, _ITER_CONTEXT) if not r.name.endswith(SUFFIX)]
    return names, contexts


def _lookup(btf: Btf, request: _Request, path: str | None) -> BtfType:
    """The composite called `request.name`: a struct or union, else a typedef of one."""
    candidates = btf.named(request.name)
    for t in candidates:
        if t.kind in _COMPOSITE:
            return t
    for t in candidates:
        target = btf.resolve(t.type_id)
        if target.kind in _COMPOSITE:
            return target
    raise UnknownBtfTypeError(request.name, path=path, line=request.line)


def generate(btf: Btf, source: str, *, gadget_path: str | None = None) -> str:
    """C definitions for the `__btf` types and iterator contexts that `source` uses."""
    names, contexts = _requests(source)
    if not names and not contexts:
        return ""
    gen = _Generator(btf)
    wanted = [(r.name, _lookup(btf, r, gadget_path)) for r in names]
    context_types = [(r.name, _lookup(btf, r, gadget_path)) for r in contexts]
    # Requested names claim their plain tags before anything reached recursively can.
    for name, t in wanted + context_types:
        gen.claim(name, t)
    for name, t in wanted:
        gen.define(t, name)
    for name, t in context_types:
        gen.define(t, name)
    for name, t in wanted + context_types:
        if name.startswith(_ITER_PREFIX):
            # Define what an iterator context points to, so `ctx->task->pid` compiles
            # without the gadget naming `task_struct__btf` itself.
            for pointee_name, pointee in _context_pointees(btf, t):
                gen.define(pointee, pointee_name)
    defines = "".join(f"#define {r.name} {r.name}{SUFFIX}\n" for r in contexts)
    return (
        "/* True kernel layouts from BTF, generated by engine.kernel.btf */\n"
        + gen.text()
        + defines
    )


def _context_pointees(btf: Btf, ctx: BtfType) -> Iterator[tuple[str, BtfType]]:
    """Named composites that an iterator context's pointer members point to."""
    for m in ctx.members:
        t = btf.resolve(m.type_id)
        if t.kind in _COMPOSITE and not m.name:
            # The kernel wraps each context pointer in an anonymous union.
            yield from _context_pointees(btf, t)
        elif t.kind is Kind.PTR:
            pointee = btf.resolve(t.ref)
            if pointee.kind in _COMPOSITE and pointee.name and pointee.name not in _KERNEL_TAGS:
                yield pointee.name, pointee


def btf_prelude(
    source: str, *, btf_path: Path = VMLINUX_BTF, gadget_path: str | None = None
) -> str:
    """C text to put before the gadget: true layouts for what it names, or "" if nothing.

    Raises `UnknownBtfTypeError` (naming `gadget_path` and the line, when given) for a type
    the kernel does not have, `BtfError` when the BTF file is unreadable or malformed.
    """
    names, contexts = _requests(source)
    if not names and not contexts:
        # Reading several MB of BTF is wasted on gadgets that ask for nothing.
        return ""
    return generate(Btf.from_file(btf_path), source, gadget_path=gadget_path)
