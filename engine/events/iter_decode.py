"""Decoding what an iterator program writes with ``bpf_seq_write``.

Records of the struct its record map names (engine.gadget.maps), back to back, or text,
one ``{"line": ...}`` a line, when it names none.
"""

from __future__ import annotations

from typing import Any

from engine.bcc import libbcc
from engine.bcc.loader import LoadedGadget, LoadedProgram
from engine.events.decode import RecordDecoder, build_decoder, fields_from_bcc
from engine.gadget.maps import iter_record_map


def decode_iter_output(
    loaded: LoadedGadget, program: LoadedProgram, raw: bytes
) -> list[dict[str, Any]]:
    record_map = iter_record_map(loaded.gadget, program.spec)
    if record_map is None:
        text = raw.decode("utf-8", "replace")
        return [{"line": line} for line in text.splitlines() if line]
    # Built once: a decoder compiles its builder, which costs far more than a decode.
    decoder: RecordDecoder | None = loaded.iter_decoders.get(record_map)
    if decoder is None:
        fields = fields_from_bcc(libbcc.lib(), loaded.bpf.module, record_map)
        decoder = loaded.iter_decoders[record_map] = build_decoder(fields, padding=loaded.padding)
    size = decoder.struct.size
    return [decoder.decode(raw[i : i + size]) for i in range(0, len(raw) - size + 1, size)]
