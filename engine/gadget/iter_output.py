"""``ITER_OUTPUT(map, ctx, rec)``: an iterator's typed record, expanded before compiling.

An iterator program writes records with ``bpf_seq_write``; bcc learns their struct only from
a ``perf_submit`` to a perf buffer. ``ITER_OUTPUT(tasks, ctx, &rec)`` stands for both: a dead
``if (0) tasks.perf_submit(...)`` that names the struct, and the real ``bpf_seq_write``. bcc
refuses map calls that come from a macro, so this is a text expansion of the gadget's source,
on the same line, so that compiler messages keep their line numbers.
"""

from __future__ import annotations

from engine.gadget.scanner import SourceScan


def expand_iter_output(scan: SourceScan) -> SourceScan:
    """Each ``ITER_OUTPUT(map, ctx, rec)`` in the code replaced by its two statements.

    Every line is kept; the scan itself comes back when there is nothing to expand.
    """
    source = scan.source
    out = []
    at = 0
    for call in scan.calls("ITER_OUTPUT"):
        if call.start < at:
            continue  # inside the arguments of the one just expanded
        if len(call.args) != 3:
            continue  # left as written: the compiler names the problem
        name, ctx, rec = (source[start:end].strip() for start, end in call.args)
        out.append(source[at : call.start])
        out.append(
            f"do {{ if (0) {name}.perf_submit({ctx}, {rec}, sizeof(*({rec}))); "
            f"bpf_seq_write(({ctx})->meta->seq, {rec}, sizeof(*({rec}))); }} while (0)"
        )
        at = call.end
    if not out:
        return scan
    out.append(source[at:])
    return SourceScan.of("".join(out))
