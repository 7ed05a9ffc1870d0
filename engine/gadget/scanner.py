"""One scan of a gadget's C source, shared by every analysis of it.

The source is read once: comments, preprocessor lines and the contents of string and
character literals are found in a single pass, and the views below blank them out, each the
same length as the source with every newline kept, so that an offset or a line number found
in one view holds in the source and in the others:

- ``text``: comments and preprocessor lines blanked, literals kept (to read ``SEC("...")``);
- ``code``: also the contents of literals blanked, their quotes kept (bodies, calls, returns);
- ``with_directives``: comments and literal contents blanked, preprocessor lines kept (names
  the compiler sees anywhere, macro definitions included).

Function bodies are found at the top level of ``code``, so braces, names and calls in
comments or strings never count. A function is defined either by name (``int f(...) {``) or
by one of bcc's defining macros (``TRACEPOINT_PROBE(sched, sched_process_exit) {`` defines
``tracepoint__sched__sched_process_exit``; see ``DEFINING_MACROS``).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator

import attrs

Span = tuple[int, int]

_NOT_NEWLINE = re.compile(r"[^\n]")
_OPEN, _CLOSE = "([{", ")]}"
IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
# One C string literal, with the white space around it (no concatenation, no newline inside).
STRING_LITERAL = re.compile(r'\s*"((?:[^"\\\n]|\\.)*)"\s*')
_TOP_LEVEL_NAME = re.compile(r"\b([A-Za-z_]\w*)\s*\(")
_STATIC = re.compile(r"\bstatic\b")

# bcc's helpers.h macros whose call, followed by a body, defines a function: the macro, the
# name it gives the function, made from the macro's first arguments, and how many those are.
DEFINING_MACROS: dict[str, tuple[str, int]] = {
    "TRACEPOINT_PROBE": ("tracepoint__{0}__{1}", 2),
    "RAW_TRACEPOINT_PROBE": ("raw_tracepoint__{0}", 1),
    "KFUNC_PROBE": ("kfunc__{0}", 1),
    "KRETFUNC_PROBE": ("kretfunc__{0}", 1),
    "LSM_PROBE": ("lsm__{0}", 1),
}


@attrs.frozen
class Call:
    """``name(arg, ...)`` in the code; offsets into the source."""

    start: int  # where the name starts
    end: int  # after the closing ")", or the end of the source when it is never closed
    args: tuple[Span, ...]  # the top-level arguments; () when the call is never closed


@attrs.frozen
class Definition:
    """A function defined at the top level: by name, or by a call of a defining macro."""

    function: str
    at: int  # where its name (or the macro's name) starts
    params: Span  # between the parentheses (a macro's arguments, for a macro)
    body: Span  # from after "{" to after "}"
    static: bool  # declared ``static``: a helper, never a program
    macro: str | None = None


@attrs.frozen
class SourceScan:
    source: str
    text: str = attrs.field(repr=False, eq=False)
    code: str = attrs.field(repr=False, eq=False)
    with_directives: str = attrs.field(repr=False, eq=False)
    _newlines: tuple[int, ...] = attrs.field(repr=False, eq=False)
    # Top-level brace blocks of `code`: where each opens, and where it ends (after "}").
    _block_opens: tuple[int, ...] = attrs.field(repr=False, eq=False)
    _block_ends: tuple[int, ...] = attrs.field(repr=False, eq=False)
    _bodies: dict[str, Span | None] = attrs.field(factory=dict, init=False, repr=False, eq=False)
    _definitions: list[tuple[Definition, ...]] = attrs.field(
        factory=list, init=False, repr=False, eq=False
    )

    @classmethod
    def of(cls, source: str) -> SourceScan:
        comments, directives, literals = _classify(source)
        code = _blank(source, [*comments, *directives, *literals])
        opens, ends = _top_level_blocks(code)
        return cls(
            source=source,
            text=_blank(source, [*comments, *directives]),
            code=code,
            with_directives=_blank(source, [*comments, *literals]),
            newlines=tuple(m.start() for m in re.finditer("\n", source)),
            block_opens=opens,
            block_ends=ends,
        )

    def line_of(self, offset: int) -> int:
        """The 1-based line that ``offset`` lies on."""
        return bisect.bisect_left(self._newlines, offset) + 1

    def closing(self, at: int) -> int | None:
        """Where the bracket that closes the one at ``at`` in ``code`` is.

        None when it is never closed, or a bracket of another kind closes first.
        """
        if self.code[at] not in _OPEN:
            raise ValueError(f"no bracket at offset {at}")
        expected: list[str] = []
        for i in range(at, len(self.code)):
            c = self.code[i]
            if c in _OPEN:
                expected.append(_CLOSE[_OPEN.index(c)])
            elif c in _CLOSE:
                if c != expected.pop():
                    return None
                if not expected:
                    return i
        return None

    def body_span(self, function: str) -> Span | None:
        """Where the body of ``function``'s definition lies: from after "{" to after "}"."""
        if function not in self._bodies:
            found = self._find_body(function)
            if found is None:
                by_macro = (d for d in self.definitions() if d.function == function and d.macro)
                found = next((d.body for d in by_macro), None)
            self._bodies[function] = found
        return self._bodies[function]

    def definitions(self) -> tuple[Definition, ...]:
        """Every function defined at the top level, by name or by a defining macro, in order.

        Found once per scan. A macro call whose arguments are not plain names defines nothing.
        """
        if not self._definitions:
            self._definitions.append(tuple(self._find_definitions()))
        return self._definitions[0]

    def _find_definitions(self) -> Iterator[Definition]:
        for match in _TOP_LEVEL_NAME.finditer(self.code):
            if self._in_block(match.start()):
                continue
            close = self.closing(match.end() - 1)
            if close is None:
                continue
            brace = _skip_space(self.code, close + 1)
            if brace >= len(self.code) or self.code[brace] != "{":
                continue
            name = match.group(1)
            body = (brace + 1, self._block_ends[bisect.bisect_left(self._block_opens, brace)])
            static = self._declared_static(match.start())
            macro = DEFINING_MACROS.get(name)
            params = (match.end(), close)
            if macro is None:
                yield Definition(name, match.start(), params, body, static)
                continue
            pattern, count = macro
            args = [self.code[a:b].strip() for a, b in self._arguments(match.end(), close)][:count]
            if len(args) == count and all(IDENTIFIER.fullmatch(a) for a in args):
                yield Definition(pattern.format(*args), match.start(), params, body, False, name)

    def _declared_static(self, at: int) -> bool:
        """Whether the declaration that names a function at ``at`` says ``static``."""
        start = max(self.code.rfind(";", 0, at), self.code.rfind("}", 0, at)) + 1
        return _STATIC.search(self.code, start, at) is not None

    def body(self, function: str) -> str | None:
        """The code of ``function``'s body (``code`` view), or None if it is not defined."""
        span = self.body_span(function)
        return None if span is None else self.code[span[0] : span[1]]

    def definition_at(self, offset: int) -> Definition | None:
        """The function definition whose body holds ``offset``, if any."""
        for definition in self.definitions():
            if definition.body[0] <= offset < definition.body[1]:
                return definition
        return None

    def calls(self, name: str, within: Span | None = None) -> Iterator[Call]:
        """Each call of ``name`` in the code (in ``within`` only, when given), in order."""
        start, end = within or (0, len(self.code))
        for match in _call_pattern(name).finditer(self.code, start, end):
            close = self.closing(match.end() - 1)
            if close is None:
                yield Call(match.start(), len(self.code), ())
            else:
                yield Call(match.start(), close + 1, tuple(self._arguments(match.end(), close)))

    def _find_body(self, function: str) -> Span | None:
        for match in _call_pattern(function).finditer(self.code):
            if self._in_block(match.start()):
                continue  # a call, or a member of a struct
            close = self.closing(match.end() - 1)
            if close is None:
                return None
            brace = _skip_space(self.code, close + 1)
            if brace < len(self.code) and self.code[brace] == "{":
                index = bisect.bisect_left(self._block_opens, brace)
                return brace + 1, self._block_ends[index]
            # A prototype, or a call in a top-level initializer: the definition may follow.
        return None

    def _in_block(self, offset: int) -> bool:
        index = bisect.bisect_right(self._block_opens, offset) - 1
        return index >= 0 and offset < self._block_ends[index]

    def _arguments(self, start: int, close: int) -> Iterator[Span]:
        depth, current = 0, start
        for i in range(start, close):
            c = self.code[i]
            if c in _OPEN:
                depth += 1
            elif c in _CLOSE:
                depth -= 1
            elif c == "," and depth == 0:
                yield current, i
                current = i + 1
        yield current, close


def _call_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"\b{re.escape(name)}\s*\(")


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _classify(source: str) -> tuple[list[Span], list[Span], list[Span]]:
    """Comments, preprocessor directives and the contents of literals, in one pass.

    A directive runs from a "#" that starts a line to a newline that is neither escaped by a
    backslash nor inside a comment; comments and literals inside it are listed too.
    """
    comments: list[Span] = []
    directives: list[Span] = []
    literals: list[Span] = []
    i, n = 0, len(source)
    line_start = True  # nothing but white space (or comments) so far on this line
    directive: int | None = None
    while i < n:
        c = source[i]
        if c == "\n":
            if directive is not None and not _escaped(source, i):
                directives.append((directive, i))
                directive = None
            line_start = True
            i += 1
        elif source.startswith("//", i):
            end = _line_comment_end(source, i)
            comments.append((i, end))
            i = end
        elif source.startswith("/*", i):
            end = source.find("*/", i + 2)
            end = n if end < 0 else end + 2
            comments.append((i, end))
            i = end
        elif c in "\"'":
            end = _literal_end(source, i)
            literals.append((i + 1, end))
            # Past the closing quote; an unterminated literal stops at its line's end.
            i = end + 1 if end < n and source[end] == c else end
            line_start = False
        else:
            if c == "#" and line_start and directive is None:
                directive = i
            if not c.isspace():
                line_start = False
            i += 1
    if directive is not None:
        directives.append((directive, n))
    return comments, directives, literals


def _escaped(source: str, newline: int) -> bool:
    """Whether the newline at ``newline`` follows a backslash (a continued line)."""
    i = newline - 1
    if i >= 0 and source[i] == "\r":
        i -= 1
    return i >= 0 and source[i] == "\\"


def _line_comment_end(source: str, start: int) -> int:
    """The newline that ends a ``//`` comment (a backslash continues it), or the end."""
    i = start
    while True:
        i = source.find("\n", i)
        if i < 0:
            return len(source)
        if not _escaped(source, i):
            return i
        i += 1


def _literal_end(source: str, start: int) -> int:
    """Where the literal opened by the quote at ``start`` closes, or its line ends."""
    quote, i, n = source[start], start + 1, len(source)
    while i < n and source[i] not in (quote, "\n"):
        i += 2 if source[i] == "\\" else 1
    return min(i, n)


def _blank(source: str, spans: Iterable[Span]) -> str:
    """``source`` with the characters of ``spans`` made spaces, newlines kept."""
    out: list[str] = []
    at = 0
    for start, end in sorted(spans):
        begin = max(start, at)  # spans nest: a directive holds its comments and literals
        if begin >= end:
            continue
        out.append(source[at:begin])
        out.append(_NOT_NEWLINE.sub(" ", source[begin:end]))
        at = end
    out.append(source[at:])
    return "".join(out)


def _top_level_blocks(code: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    opens: list[int] = []
    ends: list[int] = []
    depth = 0
    for match in re.finditer(r"[{}]", code):
        if match.group() == "{":
            if depth == 0:
                opens.append(match.start())
            depth += 1
        elif depth:
            depth -= 1
            if depth == 0:
                ends.append(match.end())
    if len(ends) < len(opens):
        ends.append(len(code))  # an unclosed block runs to the end
    return tuple(opens), tuple(ends)
