"""The running kernel's BTF, read: types, their members and where each member lies.

bcc compiles gadgets against whatever kernel headers it finds, which may belong to another
kernel version (here: 6.1 headers for a 6.18 kernel), so `task->pid` can read the wrong
offset. `/sys/kernel/btf/vmlinux` describes the running kernel exactly. This module reads the
raw BTF format (see the kernel's Documentation/bpf/btf.rst); engine.kernel.layouts writes C
definitions from it.

Only the types asked for are decoded: one pass over the type section indexes where each
type starts (about 40 ms for the 5.5 MB, 126k-type vmlinux BTF of 6.18), names are looked up
in the string section, and types are decoded on demand. That is fast enough that nothing is
cached on disk.
"""

from __future__ import annotations

import enum
import struct
from array import array
from collections.abc import Sequence
from pathlib import Path

import attrs

from engine.errors import BtfError

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")

_MAGIC = 0xEB9F
# btf_header: magic, version, flags, hdr_len, type_off, type_len, str_off, str_len.
_HEADER_FIELDS = "HBBIIIII"
_HEADER_SIZE = struct.calcsize("<" + _HEADER_FIELDS)
# btf_type: name_off, info, size or type.
_TYPE_SIZE = 12


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
TRANSPARENT = frozenset({Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.TYPE_TAG})
COMPOSITE = frozenset({Kind.STRUCT, Kind.UNION})
# Kinds whose third word is a size in bytes, and kinds whose third word names another type.
_SIZED = frozenset({Kind.INT, Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.ENUM64, Kind.FLOAT})
_REFERRING = frozenset({Kind.PTR, Kind.FUNC, Kind.VAR, Kind.DECL_TAG}) | TRANSPARENT
# Bits of an INT's encoding.
INT_SIGNED = 0x1
INT_CHAR = 0x2
INT_BOOL = 0x4


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
        while t.kind in TRANSPARENT:
            t = self.type(t.ref)
        return t

    def composite(self, name: str) -> BtfType | None:
        """The struct or union called `name`, else the one a typedef of that name stands for."""
        candidates = self.named(name)
        for t in candidates:
            if t.kind in COMPOSITE:
                return t
        for t in candidates:
            target = self.resolve(t.type_id)
            if target.kind in COMPOSITE:
                return target
        return None

    def member_offset(self, struct_name: str, path: Sequence[str]) -> int:
        """Byte offset of ``struct_name.path[0].path[1]...``, through anonymous members."""
        t = self.composite(struct_name)
        if t is None:
            raise BtfError(f"the kernel's BTF has no struct {struct_name}")
        type_id, offset = t.type_id, 0
        for name in path:
            found = self._find_member(type_id, name)
            if found is None:
                raise BtfError(f"struct {struct_name} has no member {'.'.join(path)} in BTF")
            extra, type_id = found
            offset += extra
        return offset

    def _find_member(self, type_id: int, name: str) -> tuple[int, int] | None:
        """(byte offset, member type id) of ``name`` in the struct or union ``type_id``."""
        for m in self.resolve(type_id).members:
            if m.name == name:
                return m.bit_offset // 8, m.type_id
            if not m.name and self.resolve(m.type_id).kind in COMPOSITE:
                inner = self._find_member(m.type_id, name)
                if inner is not None:
                    return m.bit_offset // 8 + inner[0], inner[1]
        return None

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
        size = size_or_type if kind in _SIZED else 0
        ref = size_or_type if kind in _REFERRING else 0
        nelems = encoding = 0
        members: tuple[Member, ...] = ()
        if kind is Kind.INT:
            (encoding,) = struct.unpack_from(o + "I", self.data, tail)
        elif kind is Kind.ARRAY:
            ref, _index, nelems = struct.unpack_from(o + "III", self.data, tail)
        elif kind in COMPOSITE:
            members = tuple(
                _member(self.string(m_name), m_type, m_off, kind_flag)
                for m_name, m_type, m_off in struct.iter_unpack(
                    o + "III", self.data[tail : tail + 12 * vlen]
                )
            )
        # FWD, FUNC_PROTO, DATASEC: nothing a layout needs beyond the kind.
        return BtfType(
            type_id=type_id,
            kind=kind,
            name=name,
            kind_flag=kind_flag,
            size=size,
            ref=ref,
            nelems=nelems,
            int_encoding=(encoding >> 24) & 0xF,
            int_bit_offset=(encoding >> 16) & 0xFF,
            int_bits=encoding & 0xFF,
            members=members,
        )


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
