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
        return _submit(name, index, *args)
    if method == "ringbuf_discard":
        return (
            f"({{ engine_stage_release(ENGINE_STAGE_OF({args[0]})); "
            f"if (0) {name}.ringbuf_discard(({args[0]}) + 0, {args[1]}); }})"
        )
    begin = _begin(site, definition, kinds, scan)
    if method == "ringbuf_reserve":
        return _reserve(index, begin, args[0])
    if method == "ringbuf_output":
        return _output(name, index, begin, args)
    if method == "perf_submit":
        ctx, data, size = args
        write = f"__engine_r = {name}.perf_submit({ctx}, engine_raw(&__engine_s->o), __engine_n);"
        dead = f"if (0) {name}.perf_submit({ctx}, ({data}) + 0, {size});"
        return _written(index, begin, _staged(data, size, write), dead)
    skb, skb_len, meta, meta_len = args
    # bcc expands perf_submit_skb into a statement ending in ";", and types nothing with it.
    write = (
        f"__engine_r = {name}.perf_submit_skb({skb}, {skb_len}, engine_raw(&__engine_s->o), "
        "__engine_n);"
    )
    return _written(index, begin, _staged(meta, meta_len, write), "")


def _written(index: int, begin: str, write: str, dead: str) -> str:
    """Origin, then ``write`` (which sets ``__engine_r``); a failed write is counted."""
    return (
        f"({{ long __engine_r = 0; struct engine_origin __engine_o; if ({begin}) {{ {write} "
        f"if (__engine_r < 0) engine_count_lost({index}); }} {dead} __engine_r; }})"
    )


def _staged(data: str, size: str, write: str) -> str:
    """Origin and record copied into a free stage of this CPU, then ``write`` from it, with
    ``__engine_n`` the header and the record's size."""
    return (
        "struct engine_stage *__engine_s = engine_stage_claim(); "
        f"if (__engine_s) {{ u32 __engine_n = ({size}); "
        "if (__engine_n < ENGINE_DATA_MAX) { __engine_n &= ENGINE_DATA_MAX - 1; "
        "__engine_s->o = __engine_o; "
        f"bpf_probe_read_kernel(__engine_s->data, __engine_n, {data}); "
        f"__engine_n += ENGINE_HDR; {write} }} else __engine_r = -7; "
        "engine_stage_release(__engine_s); } else __engine_r = -16;"
    )


def _reserve(index: int, begin: str, size: str) -> str:
    # The gadget gets a stage's room, not ring memory: the 6.1 verifier does not know that a
    # reservation checked non-null is non-null, so the gadget's own check after the engine's
    # would fail there; a map value it knows. The ring space is taken at submit.
    return (
        f"({{ void *__engine_p = 0; struct engine_origin __engine_o; if ({begin}) {{ "
        "struct engine_stage *__engine_s = engine_stage_claim(); "
        f"if (__engine_s && ({size}) < ENGINE_DATA_MAX) {{ __engine_s->o = __engine_o; "
        f"__engine_s->size = ({size}); __engine_p = __engine_s->data; }} else {{ "
        f"if (__engine_s) engine_stage_release(__engine_s); engine_count_lost({index}); }} }} "
        "__engine_p; })"
    )


def _submit(name: str, index: int, pointer: str, flags: str) -> str:
    return (
        f"({{ struct engine_stage *__engine_s = ENGINE_STAGE_OF({pointer}); "
        "u32 __engine_n = __engine_s->size; long __engine_r = -7; "
        "if (__engine_n < ENGINE_DATA_MAX) { __engine_n &= ENGINE_DATA_MAX - 1; "
        f"__engine_r = {name}.ringbuf_output(engine_raw(&__engine_s->o), "
        f"ENGINE_HDR + __engine_n, {flags}); }} engine_stage_release(__engine_s); "
        f"if (__engine_r < 0) engine_count_lost({index}); "
        f"if (0) {name}.ringbuf_submit(({pointer}) + 0, {flags}); }})"
    )


def _output(name: str, index: int, begin: str, args: tuple[str, ...]) -> str:
    data, size, flags = args
    # A size known when compiling: reserve header + record in the ring and fill it in place.
    fixed = (
        f"({{ long __engine_f = 0; "
        f"void *__engine_p = {name}.ringbuf_reserve(ENGINE_HDR + ({size})); "
        "if (__engine_p) { *(struct engine_origin *)__engine_p = __engine_o; "
        f"{_copy('__engine_p + ENGINE_HDR', data, size)}; "
        f"{name}.ringbuf_submit(__engine_p, {flags}); }} else __engine_f = -11; __engine_f; }})"
    )
    # A size known only at run time: through a stage.
    write = f"__engine_r = {name}.ringbuf_output(engine_raw(&__engine_s->o), __engine_n, {flags});"
    variable = f"({{ long __engine_r = 0; {_staged(data, size, write)} __engine_r; }})"
    dead = f"if (0) {name}.ringbuf_output(({data}) + 0, {size}, {flags});"
    choose = (
        f"__engine_r = __builtin_choose_expr(__builtin_constant_p({size}), {fixed}, {variable});"
    )
    return _written(index, begin, choose, dead)


def _copy(dst: str, src: str, size: str) -> str:
    # The condition is constant even where `size` is not: clang checks the arm it does not
    # choose too, so `__builtin_constant_p(size) && size <= N` would not compile.
    return (
        f"__builtin_choose_expr((__builtin_constant_p({size}) ? ({size}) : ENGINE_DATA_MAX) "
        f"<= ENGINE_INLINE_COPY, __builtin_memcpy({dst}, {src}, {size}), "
        f"(void)bpf_probe_read_kernel({dst}, {size}, {src}))"
    )
