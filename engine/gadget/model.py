"""The gadget model: a C file for bcc and the programs its SEC("...") markers declare.

Pure code apart from reading the file: every problem is found before anything is compiled,
and all of them are reported together, each with file and line.
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs

from engine.errors import GadgetError, GadgetParseError, SectionError
from engine.gadget.sections import ACCEPTED_FORMS, Kind, Section, SectionSyntaxError, parse_section


@attrs.frozen
class ProgramSpec:
    """One program of a gadget: its C function and where it attaches."""

    function: str
    section: Section
    line: int

    @property
    def kind(self) -> Kind:
        return self.section.kind

    @property
    def per_netns(self) -> bool:
        return self.section.per_netns

    @property
    def optional(self) -> bool:
        return self.section.optional

    @property
    def target(self) -> str:
        return self.section.target

    def plan(self) -> dict[str, object]:
        """The JSON form printed by `engine check --json`."""
        return {
            "function": self.function,
            "kind": self.kind.value,
            "target": self.target,
            "section": self.section.text,
            "line": self.line,
            "attach": "per-netns" if self.per_netns else "static",
            "optional": self.optional,
        }


@attrs.frozen
class Gadget:
    """A parsed gadget: its source text and its programs, in file order."""

    path: str
    source: str
    programs: tuple[ProgramSpec, ...]

    @property
    def name(self) -> str:
        """The gadget's short name: its file name without the extension."""
        return Path(self.path).stem

    @classmethod
    def from_file(cls, path: str | Path) -> Gadget:
        """Read and parse a gadget file; GadgetError or GadgetParseError on bad input."""
        shown = str(path)
        p = Path(path)
        try:
            if p.is_dir():
                raise GadgetError(shown, "is a directory, not a gadget file")
            raw = p.read_bytes()
        except FileNotFoundError:
            raise GadgetError(shown, "no such file") from None
        except PermissionError:
            raise GadgetError(shown, "cannot be read (permission denied)") from None
        except OSError as exc:
            raise GadgetError(shown, f"cannot be read: {exc.strerror}") from exc
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise GadgetError(f"{shown}:{line}", "is not UTF-8 text") from None
        return cls.from_source(text, shown)

    @classmethod
    def from_source(cls, source: str, path: str = "<gadget>") -> Gadget:
        return cls(path=path, source=source, programs=parse_programs(source, path))


_SEC = re.compile(r"\bSEC\s*\(")
_SEC_ARG = re.compile(r'\s*"((?:[^"\\\n]|\\.)*)"\s*\)')
_FUNCTION = re.compile(r"\s*((?:[A-Za-z_]\w*[\s*]+)+?)([A-Za-z_]\w*)\s*\(")
_FORMS = ", ".join(ACCEPTED_FORMS)


def mask_comments(source: str) -> str:
    """Blank out comments and preprocessor lines, keeping every offset and newline."""
    out = list(source)
    i, n = 0, len(source)
    line_start = True
    while i < n:
        c = source[i]
        if line_start and c == "#":
            # A preprocessor directive, with its backslash continuations.
            while i < n and not (source[i] == "\n" and source[i - 1] != "\\"):
                if source[i] != "\n":
                    out[i] = " "
                i += 1
            continue
        if c == "/" and source.startswith("//", i):
            while i < n and source[i] != "\n":
                out[i] = " "
                i += 1
            continue
        if c == "/" and source.startswith("/*", i):
            end = source.find("*/", i + 2)
            end = n if end < 0 else end + 2
            for j in range(i, end):
                if source[j] != "\n":
                    out[j] = " "
            i = end
            continue
        if c == '"':
            # Skip string literals so that comment markers inside them count as text.
            j = i + 1
            while j < n and source[j] not in '"\n':
                j += 2 if source[j] == "\\" else 1
            i = j + 1
            line_start = False
            continue
        if c == "\n":
            line_start = True
        elif not c.isspace():
            line_start = False
        i += 1
    return "".join(out)


def parse_programs(source: str, path: str) -> tuple[ProgramSpec, ...]:
    """Find every SEC("...") and the function after it; raise GadgetParseError on problems."""
    masked = mask_comments(source)
    programs: list[ProgramSpec] = []
    problems: list[SectionError] = []
    seen: dict[str, int] = {}
    for match in _SEC.finditer(masked):
        line = masked.count("\n", 0, match.start()) + 1
        arg = _SEC_ARG.match(masked, match.end())
        if arg is None:
            problems.append(
                SectionError(
                    path, line, None, 'SEC needs one string literal, as SEC("kind/target")'
                )
            )
            continue
        text = arg.group(1)
        try:
            section = parse_section(text)
        except SectionSyntaxError as exc:
            problems.append(SectionError(path, line, text, f"{exc}; accepted forms: {_FORMS}"))
            continue
        function = _function_after(masked, arg.end())
        if function is None:
            problems.append(
                SectionError(path, line, text, "is not followed by a function definition")
            )
            continue
        if function in seen:
            problems.append(
                SectionError(
                    path,
                    line,
                    text,
                    f"function {function!r} is already a program (line {seen[function]}); "
                    "each program needs its own function name",
                )
            )
            continue
        seen[function] = line
        programs.append(ProgramSpec(function=function, section=section, line=line))
    if problems:
        raise GadgetParseError(problems)
    if not programs:
        raise GadgetParseError(
            [
                SectionError(
                    path, 1, None, f"no programs: mark each with SEC(...); accepted forms: {_FORMS}"
                )
            ]
        )
    return tuple(programs)


def _function_after(masked: str, pos: int) -> str | None:
    match = _FUNCTION.match(masked, pos)
    if match is None:
        return None
    # The declaration must be followed by a body, not end in ';' (a prototype).
    depth, i = 0, match.end() - 1
    while i < len(masked):
        if masked[i] == "(":
            depth += 1
        elif masked[i] == ")":
            depth -= 1
            if depth == 0:
                break
        i += 1
    rest = masked[i + 1 :].lstrip()
    if not rest.startswith("{"):
        return None
    return match.group(2)
