"""``ITER_OUTPUT(map, ctx, rec)``: an iterator's typed record, expanded before compiling.

An iterator program writes records with ``bpf_seq_write``; bcc learns their struct only from
a ``perf_submit`` to a perf buffer. ``ITER_OUTPUT(tasks, ctx, &rec)`` stands for both: a dead
``if (0) tasks.perf_submit(...)`` that names the struct, and the real ``bpf_seq_write``. bcc
refuses map calls that come from a macro, so this is a text expansion of the gadget's source,
on the same line, so that compiler messages keep their line numbers.
"""

from __future__ import annotations

import re

_ITER_OUTPUT_CALL = re.compile(r"\bITER_OUTPUT\s*\(")


def expand_iter_output(source: str) -> str:
    """Replace each ``ITER_OUTPUT(map, ctx, rec)`` by its two statements, keeping every line."""
    out = []
    at = 0
    for match in _ITER_OUTPUT_CALL.finditer(source):
        if match.start() < at:
            continue  # inside the arguments of the one just expanded
        args, end = _call_arguments(source, match.end())
        if len(args) != 3:
            continue  # left as written: the compiler names the problem
        name, ctx, rec = (a.strip() for a in args)
        out.append(source[at : match.start()])
        out.append(
            f"do {{ if (0) {name}.perf_submit({ctx}, {rec}, sizeof(*({rec}))); "
            f"bpf_seq_write(({ctx})->meta->seq, {rec}, sizeof(*({rec}))); }} while (0)"
        )
        at = end
    out.append(source[at:])
    return "".join(out)


def _call_arguments(source: str, start: int) -> tuple[list[str], int]:
    """The top-level comma-separated arguments from ``start`` (after "(") to the matching ")"."""
    depth, args, current = 0, [], start
    for i in range(start, len(source)):
        c = source[i]
        if c in "([{":
            depth += 1
        elif c in ")]}":
            if depth == 0:
                args.append(source[current:i])
                return args, i + 1
            depth -= 1
        elif c == "," and depth == 0:
            args.append(source[current:i])
            current = i + 1
    return [], len(source)
