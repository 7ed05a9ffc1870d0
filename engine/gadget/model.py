"""The gadget model: a C file for bcc and the programs its SEC("...") markers and bcc's
naming conventions (engine.gadget.bcc_names) declare.

Pure code apart from reading the file: every problem is found before anything is compiled,
and all of them are reported together, each with file and line.
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs

from engine.errors import GadgetError, GadgetParseError, SectionError
from engine.gadget.bcc_names import CONVENTIONS, section_of_name
from engine.gadget.params import Param, Value, find_params
from engine.gadget.scanner import STRING_LITERAL, SourceScan
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
    """A parsed gadget: its source, scanned once, and its programs, in file order.

    The source lives in its scan, so that a gadget with another text (``attrs.evolve(gadget,
    scan=SourceScan.of(text))``) cannot keep the scan of the old one.
    """

    path: str
    scan: SourceScan = attrs.field(repr=False)
    programs: tuple[ProgramSpec, ...]
    # Its ENGINE_PARAM declarations, in file order (engine.gadget.params).
    params: tuple[Param, ...] = ()

    @property
    def source(self) -> str:
        return self.scan.source

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
        scan = SourceScan.of(source)
        problems: list[SectionError] = []
        params = find_params(scan, path, problems)
        try:
            programs = parse_programs(scan, path)
        except GadgetParseError as exc:
            problems.extend(exc.problems)
        if problems:
            raise GadgetParseError(sorted(problems, key=lambda p: p.line))
        return cls(path=path, scan=scan, programs=programs, params=params)

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def defaults(self) -> dict[str, Value]:
        """Every parameter's default, by name."""
        return {p.name: p.default for p in self.params}


_FUNCTION = re.compile(r"\s*((?:[A-Za-z_]\w*[\s*]+)+?)([A-Za-z_]\w*)\s*\(")
_BODY = re.compile(r"\s*\{")
_FORMS = ", ".join(ACCEPTED_FORMS)


def parse_programs(scan: SourceScan, path: str) -> tuple[ProgramSpec, ...]:
    """Every program: each SEC("...") and the function after it, and each function named by
    one of bcc's conventions; raise GadgetParseError listing every problem.

    A function with both is one program (its SEC and its name must agree). Programs come in
    file order.
    """
    problems: list[SectionError] = []
    programs = _sec_programs(scan, path, problems)
    programs += _named_programs(scan, path, {p.function: p for p in programs}, problems)
    if problems:
        raise GadgetParseError(problems)
    if not programs:
        raise GadgetParseError(
            [
                SectionError(
                    path,
                    1,
                    None,
                    f"no programs: mark each with SEC(...) (accepted forms: {_FORMS}) or name "
                    f"it the bcc way ({', '.join(CONVENTIONS)})",
                )
            ]
        )
    return tuple(sorted(programs, key=lambda p: p.line))


def _sec_programs(scan: SourceScan, path: str, problems: list[SectionError]) -> list[ProgramSpec]:
    programs: list[ProgramSpec] = []
    seen: dict[str, int] = {}
    for call in scan.calls("SEC"):
        line = scan.line_of(call.start)
        literal = (
            STRING_LITERAL.fullmatch(scan.text, *call.args[0]) if len(call.args) == 1 else None
        )
        if literal is None:
            problems.append(
                SectionError(
                    path, line, None, 'SEC needs one string literal, as SEC("kind/target")'
                )
            )
            continue
        text = literal.group(1)
        try:
            section = parse_section(text)
        except SectionSyntaxError as exc:
            problems.append(SectionError(path, line, text, f"{exc}; accepted forms: {_FORMS}"))
            continue
        function = _function_after(scan, call.end)
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
    return programs


def _named_programs(
    scan: SourceScan,
    path: str,
    by_sec: dict[str, ProgramSpec],
    problems: list[SectionError],
) -> list[ProgramSpec]:
    """Programs declared by bcc's naming conventions; those that also have a SEC are checked
    against it. A name defined twice (in two branches of an ``#if``) is one program."""
    programs: list[ProgramSpec] = []
    seen: set[str] = set()
    for definition in scan.definitions():
        function = definition.function
        if definition.static or function in seen:
            continue  # a static function is a helper: bcc never loads it
        line = scan.line_of(definition.at)
        try:
            text = section_of_name(function)
        except SectionSyntaxError as exc:
            problems.append(SectionError(path, line, None, f"function name {function!r}: {exc}"))
            continue
        if text is None:
            continue
        seen.add(function)
        try:
            section = parse_section(text)
        except SectionSyntaxError as exc:
            problems.append(
                SectionError(path, line, None, f"function name {function!r} (as {text}): {exc}")
            )
            continue
        declared = by_sec.get(function)
        if declared is None:
            programs.append(ProgramSpec(function=function, section=section, line=line))
        elif (declared.kind, declared.section.parts) != (section.kind, section.parts):
            problems.append(
                SectionError(
                    path,
                    declared.line,
                    declared.section.text,
                    f"disagrees with the name of its function {function!r}, which bcc's "
                    f"naming convention reads as {text}; make them agree or rename the function",
                )
            )
    return programs


def _function_after(scan: SourceScan, pos: int) -> str | None:
    """The function whose definition follows ``pos``; None for a prototype or no function."""
    match = _FUNCTION.match(scan.code, pos)
    if match is None:
        return None
    close = scan.closing(match.end() - 1)
    if close is None or _BODY.match(scan.code, close + 1) is None:
        return None
    return match.group(2)
