"""Decoding of the records a gadget writes, by field name, into plain Python values.

bcc records, for every ring or perf buffer, the C struct that the gadget submits to it, as
``name#type`` pairs. From those we build one ``struct.Struct`` per map (C alignment rules,
x86-64) and a list of converters, so a record decodes in one ``unpack_from`` call.

The rules (also in docs/events.md):
- ``char[N]`` is a C string: the bytes up to the first NUL, as ``str`` (UTF-8, invalid bytes
  replaced);
- a 32-bit field whose name ends in ``addr`` (``saddr``, ``daddr``, ``addr``) or contains
  ``ipv4`` is an IPv4 address in network byte order, shown dotted (``"172.17.0.2"``);
- a 128-bit or ``u8[16]`` field whose name contains ``addr6``, ``ipv6`` or ``addr_v6`` is an
  IPv6 address (``"::1"``);
- ``__be16``/``__be32``/``__be64`` fields are converted from network byte order to numbers
  (so a ``__be16 dport`` is the port a person reads); plain ``u16`` ports are left alone;
- a ``u8[6]`` field whose name contains ``mac`` is shown ``"aa:bb:cc:dd:ee:ff"``;
- ``bool`` is ``True``/``False``; other arrays are lists; pointers are integers;
- padding members (unnamed, or named ``pad``, ``_pad*``, ``__pad*``) are layout, not data:
  left out of the record unless the decoder is built with ``padding=True``.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
import struct
from collections.abc import Callable, Sequence
from typing import Any

import attrs

log = logging.getLogger(__name__)

# C type spelling → (struct format char, size). Sizes and alignments of x86-64.
_SCALARS: dict[str, str] = {
    "char": "b",
    "signed char": "b",
    "s8": "b",
    "__s8": "b",
    "unsigned char": "B",
    "u8": "B",
    "__u8": "B",
    "bool": "?",
    "_Bool": "?",
    "short": "h",
    "s16": "h",
    "__s16": "h",
    "unsigned short": "H",
    "u16": "H",
    "__u16": "H",
    "__be16": "H",
    "__le16": "H",
    "int": "i",
    "s32": "i",
    "__s32": "i",
    "pid_t": "i",
    "enum": "i",
    "unsigned int": "I",
    "u32": "I",
    "__u32": "I",
    "__be32": "I",
    "__le32": "I",
    "uid_t": "I",
    "gid_t": "I",
    "long": "q",
    "long long": "q",
    "s64": "q",
    "__s64": "q",
    "unsigned long": "Q",
    "unsigned long long": "Q",
    "u64": "Q",
    "__u64": "Q",
    "__be64": "Q",
    "__le64": "Q",
    "size_t": "Q",
    "void *": "Q",
    "char *": "Q",
    "unsigned __int128": "16s",
    "__int128": "16s",
    "__u128": "16s",
}
_ARRAY = re.compile(r"^(.+?)\s*\[(\d+)\]$")
_BIG_ENDIAN = {"__be16": ">H", "__be32": ">I", "__be64": ">Q"}

Converter = Callable[[Any], Any]


@functools.lru_cache(maxsize=4096)  # the same names (comm, paths) come again and again
def _cstring(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _ipv4(value: int) -> str:
    # The value was unpacked little-endian from bytes stored in network order.
    return str(ipaddress.IPv4Address(value.to_bytes(4, "little")))


def _ipv6(raw: bytes) -> str:
    return str(ipaddress.IPv6Address(raw))


def _mac(raw: Sequence[int]) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _swap(fmt: str) -> Converter:
    size = struct.calcsize(fmt)

    def convert(value: int) -> int:
        return int.from_bytes(value.to_bytes(size, "little"), "big")

    return convert


def is_padding(name: str) -> bool:
    """Whether a member named so only fills the struct's layout."""
    return not name or name == "pad" or name.startswith(("_pad", "__pad"))


@attrs.frozen
class Field:
    name: str
    ctype: str


@attrs.define
class RecordDecoder:
    """Decodes one map's records. Fields it cannot type are left out, said once at start."""

    fields: tuple[Field, ...]
    struct: struct.Struct
    plan: tuple[tuple[str, int, int, Converter | None], ...]  # name, first, count, converter
    undecoded: tuple[str, ...] = ()
    # Each decoded field as a numpy type at its byte offset: (name, offset, type, count).
    columns: tuple[tuple[str, int, str, int], ...] = ()
    _build: Callable[[tuple[Any, ...]], dict[str, Any]] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._build = self.builder(0)

    def value_types(self) -> dict[str, type]:
        """The Python type of each decoded field (``ipaddress`` classes for addresses), found
        by decoding a record of zeros, so that they follow the rules above exactly."""
        types: dict[str, type] = {}
        for (name, _, _, convert), value in zip(self.plan, self.decode(b"").values(), strict=True):
            if convert is _ipv4:
                types[name] = ipaddress.IPv4Address
            elif convert is _ipv6:
                types[name] = ipaddress.IPv6Address
            else:
                types[name] = type(value)
        return types

    def decode(self, raw: bytes, offset: int = 0) -> dict[str, Any]:
        """The record that starts at ``offset`` of ``raw`` (a short one padded with zeros)."""
        if len(raw) - offset < self.struct.size:
            raw, offset = raw[offset:].ljust(self.struct.size, b"\0"), 0
        return self._build(self.struct.unpack_from(raw, offset))

    def builder(self, first: int) -> Callable[[tuple[Any, ...]], dict[str, Any]]:
        """The function that makes the record's dict from unpacked values, the record's own
        starting at index ``first`` (a struct unpacked with a header in front of it).

        Generated once per map, as one dict display: a loop over the plan per record cost
        as much as the unpacking itself.
        """
        display, namespace = self.dict_display(first)
        source = f"def build(v):\n    return {display}\n"
        exec(compile(source, f"<decoder of {len(self.plan)} fields>", "exec"), namespace)
        build: Callable[[tuple[Any, ...]], dict[str, Any]] = namespace["build"]
        return build

    def dict_display(self, first: int) -> tuple[str, dict[str, Any]]:
        """The record's dict as a Python dict display of the unpacked values ``v`` (see
        ``value_sources``), and the namespace of the converters it calls."""
        values, namespace = self.value_sources(first)
        return "{" + ", ".join(f"{name!r}: {value}" for name, value in values) + "}", namespace

    def value_sources(self, first: int) -> tuple[list[tuple[str, str]], dict[str, Any]]:
        """Each field's name and the Python expression of its value in the unpacked values
        ``v`` (the record's own from index ``first``), and the namespace of the converters
        the expressions call: the parts of generated decoders."""
        values: list[tuple[str, str]] = []
        converters: dict[str, Any] = {}
        for i, (name, at, count, convert) in enumerate(self.plan):
            if count == 1:
                value = f"v[{first + at}]"
            else:
                value = "[" + ", ".join(f"v[{first + at + k}]" for k in range(count)) + "]"
            if convert is not None:
                converters[f"c{i}"] = convert
                value = f"c{i}({value})"
            values.append((name, value))
        return values, converters


def _converter(name: str, base: str, count: int, fmt: str) -> Converter | None:
    lname = name.lower()
    if count > 1 and base in ("char", "signed char", "s8", "__s8"):
        return None  # handled as one "s" field below
    if count == 1 and fmt == "I" and (lname.endswith("addr") or "ipv4" in lname):
        return _ipv4
    if count == 1 and fmt == "16s" and ("addr6" in lname or "ipv6" in lname or "addr_v6" in lname):
        return _ipv6
    if base in _BIG_ENDIAN and count == 1:
        return _swap(_BIG_ENDIAN[base])
    if count == 6 and fmt == "B" and "mac" in lname:
        return _mac
    if fmt == "16s" and count == 1:
        return lambda raw: int.from_bytes(raw, "little")
    return None


# struct format char → numpy type: little-endian, as the struct module reads them here.
_NUMPY = {
    "b": "i1",
    "B": "u1",
    "?": "?",
    "h": "<i2",
    "H": "<u2",
    "i": "<i4",
    "I": "<u4",
    "q": "<i8",
    "Q": "<u8",
    "16s": "V16",
}


def _numpy_type(base: str, fmt: str, count: int) -> tuple[str, int]:
    """The column type of a field and its element count: C strings are bytes columns (numpy
    drops the trailing NULs), ``__be*`` are read in network order, so their values are the
    numbers ``decode`` gives; 128-bit fields stay 16 raw bytes."""
    if count > 1 and fmt == "b":
        return f"S{count}", 1
    if base in _BIG_ENDIAN:
        return _BIG_ENDIAN[base].replace("H", "u2").replace("I", "u4").replace("Q", "u8"), count
    return _NUMPY[fmt], count


def build_decoder(fields: Sequence[Field], *, padding: bool = False) -> RecordDecoder:
    """A decoder for a C struct given as (name, type) pairs in declaration order; padding
    members are skipped unless ``padding``."""
    fmt_parts: list[str] = ["<"]
    offset = 0
    index = 0
    plan: list[tuple[str, int, int, Converter | None]] = []
    columns: list[tuple[str, int, str, int]] = []
    undecoded: list[str] = []
    max_align = 1
    for i, field in enumerate(fields):
        ctype = " ".join(field.ctype.split())
        if ctype.startswith("enum"):
            ctype = "enum"
        count = 1
        array = _ARRAY.match(ctype)
        base = ctype
        if array:
            base, count = array.group(1), int(array.group(2))
        fmt = _SCALARS.get(base)
        if fmt is None or (fmt == "16s" and count > 1):
            undecoded.extend(f.name for f in fields[i:])
            log.warning(
                "field %r has type %r, which the engine cannot decode; it and the fields "
                "after it are left out (use integer, char, bool or array fields)",
                field.name,
                field.ctype,
            )
            break
        size = struct.calcsize(fmt)
        align = 16 if fmt == "16s" else size
        max_align = max(max_align, align)
        pad = -offset % align
        if pad:
            fmt_parts.append(f"{pad}x")
            offset += pad
        is_string = count > 1 and fmt == "b"
        if not padding and is_padding(field.name):
            fmt_parts.append(f"{size * count}x")
            offset += size * count
            continue
        columns.append((field.name, offset, *_numpy_type(base, fmt, count)))
        if is_string:
            fmt_parts.append(f"{count}s")
            plan.append((field.name, index, 1, _cstring))
            index += 1
        else:
            fmt_parts.append(f"{count}{fmt}" if count > 1 else fmt)
            plan.append((field.name, index, count, _converter(field.name, base, count, fmt)))
            index += count
        offset += size * count
    tail = -offset % max_align
    if tail and not undecoded:
        fmt_parts.append(f"{tail}x")
    return RecordDecoder(
        tuple(fields),
        struct.Struct("".join(fmt_parts)),
        tuple(plan),
        tuple(undecoded),
        tuple(columns),
    )


def fields_from_bcc(lib: Any, module: Any, map_name: str) -> list[Field]:
    """The ``name#type`` list bcc recorded for the struct submitted to ``map_name``."""
    name = map_name.encode()
    out = []
    for i in range(lib.bpf_perf_event_fields(module, name)):
        raw = lib.bpf_perf_event_field(module, name, i).decode()
        fname, _, ctype = raw.partition("#")
        out.append(Field(fname, ctype))
    return out
