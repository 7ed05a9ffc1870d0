"""Decoding what an iterator program writes with ``bpf_seq_write``.

bcc records the fields of a struct only for what is submitted to a perf or ring buffer, so
an iterator names its record type the same way: it declares ``BPF_PERF_OUTPUT(tasks);`` and,
in its body, ``if (0) tasks.perf_submit(ctx, &rec, sizeof(rec));`` next to
``bpf_seq_write(ctx->meta->seq, &rec, sizeof(rec));``. The dead ``perf_submit`` is removed
by the compiler, but bcc has seen the struct: the iterator's output is decoded as
consecutive records of it, with ``source`` the map's name. Without such a line, the output
is text and each line becomes ``{"line": ...}``.

``ITER_OUTPUT(tasks, ctx, &rec);`` writes both lines in one: bcc refuses map calls inside
macros, so the loader expands it in the gadget's text before compiling (engine.gadget.iter_output),
on the same line. A map used only by iterators gets no perf reader.
"""

from __future__ import annotations

import re
from typing import Any

from engine.bcc import libbcc
from engine.bcc.loader import LoadedGadget, LoadedProgram
from engine.events.decode import build_decoder, fields_from_bcc
from engine.gadget.model import Gadget
from engine.gadget.scanner import function_body
from engine.gadget.sections import Kind

_MAP_USE = re.compile(r"\b(\w+)\s*\.\s*\w+\s*\(|\bITER_OUTPUT\s*\(\s*(\w+)\s*,")
_SUBMIT = re.compile(r"\b(\w+)\s*\.\s*perf_submit\s*\(|\bITER_OUTPUT\s*\(\s*(\w+)\s*,")


def iter_source(loaded: LoadedGadget, program: LoadedProgram) -> str:
    """The map that names the iterator's record type, or the function for text output."""
    body = function_body(loaded.gadget.source, program.spec.function) or ""
    match = _SUBMIT.search(body)
    if match is None:
        return program.spec.function
    return match.group(1) or match.group(2)


def iterator_only_maps(gadget: Gadget) -> frozenset[str]:
    """Maps that only iterator programs name: they type iterator output, no reader needed."""
    used: dict[str, set[bool]] = {}
    for spec in gadget.programs:
        body = function_body(gadget.source, spec.function) or ""
        for match in _MAP_USE.finditer(body):
            name = match.group(1) or match.group(2)
            used.setdefault(name, set()).add(spec.kind is Kind.ITER)
    return frozenset(name for name, by_iter in used.items() if by_iter == {True})


def decode_iter_output(
    loaded: LoadedGadget, program: LoadedProgram, raw: bytes
) -> list[dict[str, Any]]:
    source = iter_source(loaded, program)
    if source == program.spec.function:
        text = raw.decode("utf-8", "replace")
        return [{"line": line} for line in text.splitlines() if line]
    decoder = build_decoder(fields_from_bcc(libbcc.lib(), loaded.bpf.module, source))
    size = decoder.struct.size
    return [decoder.decode(raw[i : i + size]) for i in range(0, len(raw) - size + 1, size)]
