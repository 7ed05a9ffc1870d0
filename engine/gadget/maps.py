"""Which programs name which maps, read from the gadget's scanned source.

bcc records the fields of a struct only for what is submitted to a perf or ring buffer, so
an iterator names its record type the same way: it declares ``BPF_PERF_OUTPUT(tasks);`` and,
in its body, ``if (0) tasks.perf_submit(ctx, &rec, sizeof(rec));`` next to
``bpf_seq_write(ctx->meta->seq, &rec, sizeof(rec));``. The dead ``perf_submit`` is removed
by the compiler, but bcc has seen the struct: the iterator's output is decoded as
consecutive records of it (engine.events.iter_decode), with ``source`` the map's name.
Without such a line, the output is text and each line becomes ``{"line": ...}``.

``ITER_OUTPUT(tasks, ctx, &rec);`` writes both lines in one: bcc refuses map calls inside
macros, so the loader expands it in the gadget's text before compiling (engine.gadget.iter_output),
on the same line. A map used only by iterators gets no perf reader.

Only code counts: a map named in a comment or a string is not used.
"""

from __future__ import annotations

import re

from engine.gadget.model import Gadget, ProgramSpec
from engine.gadget.sections import Kind

_MAP_USE = re.compile(r"\b(\w+)\s*\.\s*\w+\s*\(|\bITER_OUTPUT\s*\(\s*(\w+)\s*,")
_SUBMIT = re.compile(r"\b(\w+)\s*\.\s*perf_submit\s*\(|\bITER_OUTPUT\s*\(\s*(\w+)\s*,")


def iter_record_map(gadget: Gadget, spec: ProgramSpec) -> str | None:
    """The map that names the iterator's record type; None when its output is text."""
    match = _SUBMIT.search(gadget.scan.body(spec.function) or "")
    return None if match is None else match.group(1) or match.group(2)


def iter_source(gadget: Gadget, spec: ProgramSpec) -> str:
    """The ``source`` of an iterator's events: its record map, or its function for text."""
    return iter_record_map(gadget, spec) or spec.function


def iterator_only_maps(gadget: Gadget) -> frozenset[str]:
    """Maps that only iterator programs name: they type iterator output, no reader needed."""
    used: dict[str, set[bool]] = {}
    for spec in gadget.programs:
        for match in _MAP_USE.finditer(gadget.scan.body(spec.function) or ""):
            name = match.group(1) or match.group(2)
            used.setdefault(name, set()).add(spec.kind is Kind.ITER)
    return frozenset(name for name, by_iter in used.items() if by_iter == {True})


def histogram_maps(gadget: Gadget) -> frozenset[str]:
    """Maps declared ``BPF_HISTOGRAM(name, ...)`` or ``BPF_TABLE("histogram", ..., name, ...)``:
    log2 histograms, each key a slot (or a struct with a ``slot`` field)."""
    scan = gadget.scan
    names = {
        scan.code[a:b].strip() for call in scan.calls("BPF_HISTOGRAM") for a, b in call.args[:1]
    }
    for call in scan.calls("BPF_TABLE"):
        if len(call.args) >= 4 and scan.text[slice(*call.args[0])].strip() == '"histogram"':
            names.add(scan.code[slice(*call.args[3])].strip())
    return frozenset(names)


def map_writers(gadget: Gadget, map_name: str) -> str | None:
    """The one program whose body names ``map_name``, if exactly one does."""
    pattern = re.compile(rf"\b{re.escape(map_name)}\s*\.")
    users = [
        spec.function
        for spec in gadget.programs
        if pattern.search(gadget.scan.body(spec.function) or "")
    ]
    return users[0] if len(users) == 1 else None
