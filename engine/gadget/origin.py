"""Every buffer write of a gadget rewritten so that the record's origin goes in front of it.

A pure text rewrite of the gadget's source, done before compiling: each
``M.ringbuf_output``, ``M.ringbuf_reserve``/``ringbuf_submit``/``ringbuf_discard``,
``M.perf_submit`` and ``M.perf_submit_skb`` of a buffer map ``M`` becomes a statement
expression that calls the helpers of engine/bcc/origin_prelude.py: the record that reaches the
buffer is a 32-byte ``struct engine_origin`` followed by the gadget's own record, byte for
byte. The expansion is written on the call's first line and the call's own line breaks follow
it, so that every line keeps its number: compiler messages still point at the user's file
and line.

What a call site gets depends on the programs that run it (a call graph of the gadget's
functions, read from its scan): tracing programs the task's origin and the selection check;
socket filters and classifiers the packet's, which needs the packet (the function's
``struct __sk_buff *`` parameter); iterators nothing (they write with ``bpf_seq_write``; a map
call in them only names the record type, ``if (0) M.perf_submit(...)``).

bcc learns a map's record type from the last typed write to it in the source, so every
expansion keeps a dead copy of the user's own call (``if (0) ...``) after its live code, whose
writes pass untyped pointers. ``(ARG) + 0`` in the copy makes an array argument decay to a
pointer (bcc 0.26 aborts on a bare array there).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import attrs

from engine.errors import GadgetParseError, SectionError
from engine.gadget.model import Gadget
from engine.gadget.origin_c import output, reserve, staged, submit, written
from engine.gadget.scanner import Definition, SourceScan, Span
from engine.gadget.sections import Kind

RING, PERF = "ringbuf", "perf"
MAX_MAPS = 64  # engine/bcc/origin_prelude.py: MAX_BUFFER_MAPS

TASK_KINDS = frozenset(
    {
        Kind.KPROBE,
        Kind.KRETPROBE,
        Kind.TRACEPOINT,
        Kind.RAW_TRACEPOINT,
        Kind.FENTRY,
        Kind.FEXIT,
        Kind.UPROBE,
        Kind.URETPROBE,
        Kind.USDT,
        Kind.LSM,
    }
)
PACKET_KINDS = frozenset({Kind.SOCKET, Kind.CLASSIFIER})

# Arguments of each method, and the kind of map it belongs to.
_METHODS = {
    "ringbuf_output": (3, RING),
    "ringbuf_reserve": (1, RING),
    "ringbuf_submit": (2, RING),
    "ringbuf_discard": (2, RING),
    "perf_submit": (3, PERF),
    "perf_submit_skb": (4, PERF),
}
_DECLARATION = re.compile(r"\b(BPF_RINGBUF_OUTPUT|BPF_PERF_OUTPUT)\s*\(\s*([A-Za-z_]\w*)")
_RAW_HELPER = re.compile(
    r"\b(bpf_ringbuf_(?:output|reserve|submit|discard)|bpf_perf_event_output)\s*\("
)
_CALLED = re.compile(r"\b([A-Za-z_]\w*)\s*\(")
_SKB_PARAM = re.compile(r"struct\s+__sk_buff\s*\*\s*([A-Za-z_]\w*)")
# clang: "PATH:LINE:COLUMN: error: message".
_DIAGNOSTIC = re.compile(r"^(.*?):(\d+):(\d+): ((?:error|warning|note): .*)$")


@attrs.frozen
class OutputMap:
    """A buffer map of the gadget: its number (its slot in the kernel's counters) and kind."""

    name: str
    index: int
    kind: str  # RING or PERF


@attrs.frozen
class Rewritten:
    """The gadget with its writes rewritten, and its buffer maps by name."""

    gadget: Gadget
    maps: dict[str, OutputMap]
    calls: int  # how many calls were rewritten
    original: str = ""  # the source before the rewrite
    lines: frozenset[int] = frozenset()  # the lines a rewritten call starts on

    def user_messages(self, messages: list[str]) -> list[str]:
        """Compiler messages as the user wrote the file: one message per line and problem
        where the rewrite copied an argument, with the user's line shown, not the expansion.
        """
        if not self.lines:
            return messages
        out: list[str] = []
        seen: set[tuple[int, str]] = set()
        skipping = False
        source_lines = self.original.splitlines()
        for message in messages:
            found = _DIAGNOSTIC.match(message)
            if found is None:
                if not skipping:
                    out.append(message)
                continue
            path, line, what = found.group(1), int(found.group(2)), found.group(4)
            skipping = path == self.gadget.path and line in self.lines
            if not skipping:
                out.append(message)
                continue
            if (line, what) not in seen:
                seen.add((line, what))
                out.append(f"{path}:{line}: {what}")
                out.append(source_lines[line - 1] if line <= len(source_lines) else "")
        return out


@attrs.frozen
class _Site:
    map: OutputMap
    method: str
    start: int  # where the map's name starts
    end: int  # after ")"
    args: tuple[str, ...]  # each on one line


def output_maps(scan: SourceScan) -> dict[str, OutputMap]:
    """The buffer maps declared in ``scan``, numbered in declaration order."""
    out: dict[str, OutputMap] = {}
    for match in _DECLARATION.finditer(scan.code):
        name = match.group(2)
        if name not in out:
            kind = RING if match.group(1) == "BPF_RINGBUF_OUTPUT" else PERF
            out[name] = OutputMap(name, len(out), kind)
    return out


def rewrite_outputs(gadget: Gadget) -> Rewritten:
    """Every buffer write of ``gadget`` rewritten; GadgetParseError listing every problem."""
    scan = gadget.scan
    maps = output_maps(scan)
    problems = [
        SectionError(gadget.path, scan.line_of(m.start()), None, problem)
        for m, problem in _raw_helpers(scan)
    ]
    if len(maps) > MAX_MAPS:
        problems.append(
            SectionError(gadget.path, 1, None, f"more than {MAX_MAPS} ring or perf buffer maps")
        )
    kinds = _kinds_by_function(gadget)
    out: list[str] = []
    lines: set[int] = set()
    at = count = 0
    for site in _sites(scan, maps):
        if site.start < at:
            continue  # inside the arguments of the call just rewritten
        line = scan.line_of(site.start)
        definition = scan.definition_at(site.start)
        try:
            text = _expand(site, definition, kinds, scan)
        except _Problem as exc:
            problems.append(SectionError(gadget.path, line, None, str(exc)))
            continue
        if text is None:
            continue
        out.append(gadget.source[at : site.start])
        out.append(text + "\n" * gadget.source.count("\n", site.start, site.end))
        at = site.end
        lines.add(line)
        count += 1
    if problems:
        raise GadgetParseError(problems)
    if not lines:
        return Rewritten(gadget, maps, 0, gadget.source)
    out.append(gadget.source[at:])
    text = "".join(out)
    rewritten = attrs.evolve(gadget, scan=SourceScan.of(text))
    return Rewritten(rewritten, maps, count, gadget.source, frozenset(lines))


class _Problem(Exception):
    """A call site the engine cannot give an origin to; its message is the user's."""


def _raw_helpers(scan: SourceScan) -> Iterator[tuple[re.Match[str], str]]:
    for match in _RAW_HELPER.finditer(scan.with_directives):
        yield (
            match,
            (
                f"{match.group(1)}() writes a record the engine cannot give an origin to: "
                "write through the map (MAP.ringbuf_output, MAP.ringbuf_reserve/submit, "
                "MAP.perf_submit)"
            ),
        )


def _sites(scan: SourceScan, maps: dict[str, OutputMap]) -> list[_Site]:
    """Every ``M.method(...)`` of a buffer map, in source order."""
    out = []
    for method in _METHODS:
        for call in scan.calls(method):
            name = _map_before(scan.code, call.start)
            if name not in maps or not call.args:
                continue  # another object's method, or never closed: the compiler says so
            args = tuple(_one_line(scan.text, span) for span in call.args)
            out.append(
                _Site(maps[name], method, _name_start(scan.code, call.start), call.end, args)
            )
    return sorted(out, key=lambda s: s.start)


def _map_before(code: str, start: int) -> str | None:
    """``M`` in ``M . method(`` where the method's name starts at ``start``."""
    i = start - 1
    while i >= 0 and code[i].isspace():
        i -= 1
    if i < 0 or code[i] != ".":
        return None
    at = _name_start(code, start)
    name = code[at:i].strip()
    return name if name.isidentifier() else None


def _name_start(code: str, start: int) -> int:
    """Where the map's name before ``. method`` starts (``start`` itself when there is none)."""
    i = start - 1
    while i >= 0 and code[i].isspace():
        i -= 1
    if i < 0 or code[i] != ".":
        return start
    i -= 1
    while i >= 0 and code[i].isspace():
        i -= 1
    while i >= 0 and (code[i].isalnum() or code[i] == "_"):
        i -= 1
    return i + 1


def _one_line(text: str, span: Span) -> str:
    """An argument as written (comments blanked), its line breaks made spaces."""
    return text[span[0] : span[1]].replace("\n", " ").strip()


def _kinds_by_function(gadget: Gadget) -> dict[str, frozenset[Kind]]:
    """The kinds of the programs from which each function of the gadget can run."""
    scan = gadget.scan
    defined = {d.function: d for d in scan.definitions()}
    callees = {
        name: {m.group(1) for m in _CALLED.finditer(scan.code, *d.body)} & defined.keys()
        for name, d in defined.items()
    }
    kinds: dict[str, set[Kind]] = {name: set() for name in defined}
    for spec in gadget.programs:
        todo, seen = [spec.function], set()
        while todo:
            function = todo.pop()
            if function in seen or function not in kinds:
                continue
            seen.add(function)
            kinds[function].add(spec.kind)
            todo.extend(callees[function])
    return {name: frozenset(found) for name, found in kinds.items()}


def _begin(site: _Site, definition: Definition, kinds: frozenset[Kind], scan: SourceScan) -> str:
    """The C condition that fills ``__engine_o`` and says whether the record may be written."""
    index = site.map.index
    if not kinds & PACKET_KINDS:
        return f"engine_begin_task({index}, &__engine_o)"
    if kinds - PACKET_KINDS:
        raise _Problem(
            f"function {definition.function!r} runs in packet programs and in others; the engine "
            "cannot tell where its records come from: use one function per kind of program"
        )
    if site.method in ("perf_submit", "perf_submit_skb"):
        skb = site.args[0]
    else:
        found = _SKB_PARAM.search(scan.code, *definition.params)
        if found is None:
            raise _Problem(
                f"{site.map.name}.{site.method} in {definition.function!r}, which a packet program "
                "runs: the engine needs the packet to name the record's origin; give the "
                "function a 'struct __sk_buff *' parameter"
            )
        skb = found.group(1)
    packet = f"((struct __sk_buff *)({skb}))"
    # A socket filter is one program in many netns: the packet's device says which.
    netns = f"engine_skb_netns_id({packet})" if Kind.SOCKET in kinds else "0"
    return f"engine_begin_skb(&__engine_o, {packet}, {netns})"


def _expand(
    site: _Site, definition: Definition | None, by_function: dict[str, frozenset[Kind]],
    scan: SourceScan,
) -> str | None:  # fmt: skip
    """The call's replacement; None to leave it as written."""
    name, method, args, index = site.map.name, site.method, site.args, site.map.index
    want, kind = _METHODS[method]
    if definition is None:
        raise _Problem(f"{name}.{method} outside a function")
    kinds = by_function.get(definition.function, frozenset())
    if Kind.ITER in kinds and not kinds - {Kind.ITER}:
        return None  # an iterator's record type (its output is bpf_seq_write)
    if len(args) != want:
        raise _Problem(f"{name}.{method} takes {want} arguments, not {len(args)}")
    if kind != site.map.kind:
        raise _Problem(f"{name} is a {site.map.kind} buffer: it has no {method}")
    if method == "ringbuf_submit":
        return submit(name, index, *args)
    if method == "ringbuf_discard":
        return (
            f"({{ engine_stage_release(ENGINE_STAGE_OF({args[0]})); "
            f"if (0) {name}.ringbuf_discard(({args[0]}) + 0, {args[1]}); }})"
        )
    begin = _begin(site, definition, kinds, scan)
    if method == "ringbuf_reserve":
        return reserve(index, begin, args[0])
    if method == "ringbuf_output":
        return output(name, index, begin, args)
    if method == "perf_submit":
        ctx, data, size = args
        write = f"__engine_r = {name}.perf_submit({ctx}, engine_raw(&__engine_s->o), __engine_n);"
        dead = f"if (0) {name}.perf_submit({ctx}, ({data}) + 0, {size});"
        return written(index, begin, staged(data, size, write), dead)
    skb, skb_len, meta, meta_len = args
    # bcc expands perf_submit_skb into a statement ending in ";", and types nothing with it.
    write = (
        f"__engine_r = {name}.perf_submit_skb({skb}, {skb_len}, engine_raw(&__engine_s->o), "
        "__engine_n);"
    )
    return written(index, begin, staged(meta, meta_len, write), "")
