"""What a gadget asks true kernel layouts for, read from its scans (engine.gadget.scanner).

Every `NAME__btf` it names, every iterator context (`struct bpf_iter__TARGET`), and the
members it goes through with ``->`` (whose pointees engine.kernel.layouts then defines too).
Names in comments and literals are not requests; names in macro definitions are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import attrs

from engine.gadget.scanner import SourceScan

# The suffix a gadget adds to a type name to ask for the kernel's true layout.
SUFFIX = "__btf"


@attrs.frozen
class Request:
    """A name the gadget uses, with the line of its first use (1-based)."""

    name: str
    line: int


_BTF_NAME = re.compile(r"\b(\w+)" + SUFFIX + r"\b")
# A member that is itself followed by "->" (after any subscripts): `a->b->c`, `a.b[i]->c`.
_FOLLOWED = re.compile(r"(?:->|\.)\s*([A-Za-z_]\w*)\s*(?:\[[^\]\[]*\]\s*)*->")
ITER_PREFIX = "bpf_iter__"
_ITER_CONTEXT = re.compile(r"\bstruct\s+(" + ITER_PREFIX + r"\w+)\b")


def _first_uses(scans: Iterable[SourceScan], pattern: re.Pattern[str]) -> list[Request]:
    seen: dict[str, Request] = {}
    for scan in scans:
        for match in pattern.finditer(scan.with_directives):
            name = match.group(1)
            if name not in seen:
                seen[name] = Request(name, scan.line_of(match.start()))
    return list(seen.values())


@attrs.frozen
class Requests:
    """What the scanned sources ask true layouts for: `NAME` of each `NAME__btf`, contexts."""

    names: list[Request]
    contexts: list[Request]
    follow: frozenset[str] = frozenset()

    @classmethod
    def of(cls, scans: Sequence[SourceScan]) -> Requests:
        contexts = _first_uses(scans, _ITER_CONTEXT)
        return cls(
            names=_first_uses(scans, _BTF_NAME),
            contexts=[r for r in contexts if not r.name.endswith(SUFFIX)],
            follow=frozenset(
                m.group(1) for scan in scans for m in _FOLLOWED.finditer(scan.with_directives)
            ),
        )

    def __bool__(self) -> bool:
        return bool(self.names or self.contexts)
