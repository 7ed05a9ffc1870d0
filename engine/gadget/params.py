"""Gadget parameters: what a gadget declares with ``ENGINE_PARAM`` and the values given to them.

A parameter is declared at file scope::

    ENGINE_PARAM(u64, min_size, 1, "report only reads of at least this many bytes");

(a C type, a name, a default, a one-line description in a string literal) and read in a
program with ``ENGINE_PARAM_GET(min_size)``. The engine keeps every parameter of a gadget in
one slot of an array map (engine/bcc/params.py), so values can change while it runs.

Declarations are found in the scanner's views before anything is compiled: a malformed one
(an unknown type, a default out of the type's range, a name declared twice, a
``ENGINE_PARAM_GET`` of no declared parameter) is a located error. Values (a default, ``--param
NAME=VALUE``, ``set_param``) are integers, decimal or ``0x`` hexadecimal, with an optional
sign; a ``bool`` takes ``true``/``false`` (or 1/0).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import attrs

from engine.errors import SectionError
from engine.gadget.scanner import IDENTIFIER, STRING_LITERAL, SourceScan

DECLARE = "ENGINE_PARAM"
GET = "ENGINE_PARAM_GET"
Value = int | bool

# C's spellings of an integer the engine reads the same as the compiler: decimal (no leading
# zero: C reads that as octal) or hexadecimal, with an optional sign and integer suffix.
_INTEGER = re.compile(r"([+-]?)\s*(0[xX][0-9a-fA-F]+|0|[1-9][0-9]*)([uU]?[lL]{0,2}|[lL]{1,2}[uU])")


@attrs.frozen
class ParamType:
    """A C type a parameter may have: its width in bits and whether it is signed."""

    name: str
    bits: int
    signed: bool = False

    @property
    def is_bool(self) -> bool:
        return self.name == "bool"

    @property
    def low(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def high(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    def parse(self, text: str) -> Value:
        """The value ``text`` spells; ValueError saying what is wrong."""
        text = text.strip()
        if self.is_bool:
            words = {"true": True, "1": True, "false": False, "0": False}
            if text.lower() not in words:
                raise ValueError(f"{text!r} is not a bool (true, false, 1 or 0)")
            return words[text.lower()]
        match = _INTEGER.fullmatch(text)
        if match is None:
            raise ValueError(f"{text!r} is not an integer (decimal, or hexadecimal 0x...)")
        sign, digits, _ = match.groups()
        value = int(digits, 0)
        return self.check(-value if sign == "-" else value)

    def check(self, value: object) -> Value:
        """``value`` (a Python int or bool) if this type holds it; ValueError (TypeError for
        what is not a number) if not."""
        if self.is_bool:
            if isinstance(value, bool) or value in (0, 1):
                return bool(value)
            raise ValueError(f"{value!r} is not a bool (true, false, 1 or 0)")
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{value!r} is not an integer")
        if not self.low <= value <= self.high:
            raise ValueError(f"{value} is out of range for {self.name} ({self.low}..{self.high})")
        return value

    def value_of(self, given: object) -> Value:
        """A value given as text (parsed) or as a Python int or bool (checked)."""
        return self.parse(given) if isinstance(given, str) else self.check(given)


def _types() -> dict[str, ParamType]:
    types = {"bool": ParamType("bool", 8)}
    for bits in (8, 16, 32, 64):
        for prefix in ("", "__"):
            types[f"{prefix}u{bits}"] = ParamType(f"{prefix}u{bits}", bits)
            types[f"{prefix}s{bits}"] = ParamType(f"{prefix}s{bits}", bits, signed=True)
    # BPF targets are 64-bit: int is 32 bits, long 64.
    for name, bits in (("int", 32), ("long", 64)):
        types[name] = ParamType(name, bits, signed=True)
        types[f"unsigned {name}"] = ParamType(f"unsigned {name}", bits)
    return types


TYPES = _types()


@attrs.frozen
class Param:
    """One declared parameter of a gadget."""

    name: str
    type: ParamType
    default: Value
    description: str
    line: int

    def summary(self) -> str:
        """``NAME TYPE = DEFAULT: DESCRIPTION``, as ``engine check`` prints it."""
        default = str(self.default).lower() if self.type.is_bool else str(self.default)
        return f"{self.name} {self.type.name} = {default}: {self.description}"

    def plan(self) -> dict[str, object]:
        """The JSON form printed by ``engine check --json``."""
        return {
            "name": self.name,
            "type": self.type.name,
            "default": self.default,
            "description": self.description,
            "line": self.line,
        }


def find_params(scan: SourceScan, path: str, problems: list[SectionError]) -> tuple[Param, ...]:
    """Every ``ENGINE_PARAM`` declaration, in file order; each problem goes to ``problems``.

    Also checks that every ``ENGINE_PARAM_GET`` names a declared parameter (one whose
    declaration is malformed counts: its problem is reported once, at the declaration).
    """
    params: dict[str, Param] = {}
    named: list[str] = []
    for line, name, found in _declarations(scan):
        if name is not None and name not in named:
            named.append(name)
        problem = found if isinstance(found, str) else None
        if isinstance(found, Param):
            if found.name in params:
                problem = f"{found.name!r} is already declared on line {params[found.name].line}"
            else:
                params[found.name] = found
        if problem is not None:
            problems.append(SectionError(path, line, None, f"{DECLARE}: {problem}"))
    for call in scan.calls(GET):
        name = scan.code[slice(*call.args[0])].strip() if len(call.args) == 1 else ""
        if name not in named:
            declared = ", ".join(named) or "none"
            problem = f"{GET}({name or '...'}): no such parameter (declared: {declared})"
            problems.append(SectionError(path, scan.line_of(call.start), None, problem))
    return tuple(params.values())


def _declarations(scan: SourceScan) -> Iterator[tuple[int, str | None, Param | str]]:
    """Each declaration's line, the name it gives (None if it gives none), and the parameter
    it declares or what is wrong with it."""
    for call in scan.calls(DECLARE):
        line = scan.line_of(call.start)
        name = None
        if len(call.args) >= 2:
            text = scan.code[call.args[1][0] : call.args[1][1]].strip()
            name = text if IDENTIFIER.fullmatch(text) else None
        if scan.definition_at(call.start) is not None:
            yield line, name, "declare parameters at file scope, not inside a function"
        elif len(call.args) != 4:
            yield line, name, 'needs 4 arguments: (TYPE, NAME, DEFAULT, "DESCRIPTION")'
        elif not scan.code[call.end :].lstrip().startswith(";"):
            yield line, name, "end the declaration with ';'"
        else:
            yield line, name, _declaration(scan, call.args, line)


def _declaration(scan: SourceScan, args: tuple[tuple[int, int], ...], line: int) -> Param | str:
    type_text, name, default = (" ".join(scan.code[a:b].split()) for a, b in args[:3])
    kind = TYPES.get(type_text)
    if kind is None:
        return f"type {type_text!r} is not supported (one of: {', '.join(TYPES)})"
    if not IDENTIFIER.fullmatch(name):
        return f"{name!r} is not a C identifier"
    description = STRING_LITERAL.fullmatch(scan.text, *args[3])
    if description is None:
        return "the description must be one string literal"
    try:
        value = kind.parse(default)
    except ValueError as exc:
        return f"default of {name!r}: {exc}"
    text = re.sub(r"\\(.)", r"\1", description.group(1))  # a one-line text: escapes read plainly
    return Param(name, kind, value, text, line)
