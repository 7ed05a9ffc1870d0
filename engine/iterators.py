"""Decoding what an iterator program writes with ``bpf_seq_write``.

bcc records the fields of a struct only for what is submitted to a perf or ring buffer, so
an iterator names its record type the same way: it declares ``BPF_PERF_OUTPUT(tasks);`` and,
in its body, ``if (0) tasks.perf_submit(ctx, &rec, sizeof(rec));`` next to
``bpf_seq_write(ctx->meta->seq, &rec, sizeof(rec));``. The dead ``perf_submit`` is removed
by the compiler, but bcc has seen the struct: the iterator's output is decoded as
consecutive records of it, with ``source`` the map's name. Without such a line, the output
is text and each line becomes ``{"line": ...}``.
"""

from __future__ import annotations

import re
from typing import Any

from engine import libbcc
from engine.decode import build_decoder, fields_from_bcc
from engine.loader import LoadedGadget, LoadedProgram
from engine.source_text import function_body

_SUBMIT = re.compile(r"\b(\w+)\s*\.\s*perf_submit\s*\(")


def iter_source(loaded: LoadedGadget, program: LoadedProgram) -> str:
    """The map that names the iterator's record type, or the function for text output."""
    body = function_body(loaded.gadget.source, program.spec.function) or ""
    match = _SUBMIT.search(body)
    return match.group(1) if match else program.spec.function


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
