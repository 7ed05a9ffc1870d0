"""Finding a function's body in gadget source, to see which maps it writes to."""

from __future__ import annotations

import re


def function_body_span(source: str, function: str) -> tuple[int, int] | None:
    """Where the body of ``function`` lies in ``source``: from after ``{`` to after ``}``."""
    match = re.search(rf"\b{re.escape(function)}\s*\([^;{{]*\)\s*\{{", source)
    if match is None:
        return None
    depth, i = 1, match.end()
    while i < len(source) and depth:
        depth += {"{": 1, "}": -1}.get(source[i], 0)
        i += 1
    return match.end(), i


def function_body(source: str, function: str) -> str | None:
    span = function_body_span(source, function)
    return None if span is None else source[span[0] : span[1]]
