"""Classifiers that decide a packet's fate: a warning, since they starve other tools.

The engine's classifiers share each veth's clsact hook with other tools' filters, attached in
direct-action mode. Only TC_ACT_UNSPEC (-1) lets the next filter see the packet; any other
verdict (TC_ACT_OK, TC_ACT_SHOT, a redirect...) ends the chain, so filters that run after ours
never see it. Each ``return`` in a classifier's own body is read from the source: a value that
is not TC_ACT_UNSPEC or -1 gives one warning with file and line. Returns in helpers it calls
are not followed: a heuristic that catches the usual mistake, not a proof.
"""

from __future__ import annotations

import re

import attrs

from engine.gadget.model import Gadget
from engine.gadget.sections import Kind

_PASS_ON = frozenset({"TC_ACT_UNSPEC", "-1", "(-1)"})
_RETURN = re.compile(r"\breturn\b\s*([^;]*);")


@attrs.frozen
class TcReturnWarning:
    path: str
    line: int
    function: str
    value: str

    def __str__(self) -> str:
        return (
            f"{self.path}:{self.line}: classifier {self.function!r} returns {self.value}: "
            "only TC_ACT_UNSPEC lets other tools' tc filters see the packet"
        )


def tc_return_warnings(gadget: Gadget) -> list[TcReturnWarning]:
    """One warning per ``return`` of a classifier whose value is not TC_ACT_UNSPEC."""
    scan = gadget.scan
    warnings = []
    for spec in gadget.programs:
        if spec.kind is not Kind.CLASSIFIER:
            continue
        span = scan.body_span(spec.function)
        if span is None:
            continue
        for match in _RETURN.finditer(scan.code, *span):
            value = " ".join(match.group(1).split())
            if value not in _PASS_ON:
                line = scan.line_of(match.start())
                warnings.append(TcReturnWarning(gadget.path, line, spec.function, value))
    return warnings
