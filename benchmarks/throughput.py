"""(3) Event throughput: the engine's three outputs against bcc, same producer, same gadget.

The hammer calls getppid() in a loop; the gadget writes ``RECORDS_PER_CALL`` records per call
(only for the hammer's pid, set in a map before the hammer starts), so that the load generator
makes more records than the fastest reader takes; every figure says how many it made. Readers
(benchmarks/readers.py): bcc's loop reading every field (baseline 1) against ``events()`` and
``batches()``; a bcc script printing JSON lines to a pipe (baseline 2) against ``engine run
--output json`` to a pipe. The gadget counts the records it was to write (``fired``); lost =
fired - delivered, which counts every drop (full kernel buffer, engine queue) the same way for
every reader in this process; for the subprocess readers the hammer's own count of calls (times
the records per call) stands in for ``fired``. Calls the program never saw (the kernel skips a
BPF program that would nest in another one on the same CPU) are reported apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from benchmarks.bcc_side import records_per_call
from benchmarks.hammer import Load
from benchmarks.readers import (
    Run,
    Runner,
    batches_runs,
    bcc_json_runs,
    bcc_loop_engine_wakeups_runs,
    bcc_loop_runs,
    engine_json_runs,
    events_runs,
)
from benchmarks.results import Figure, median

# Each reader: its runner, the baseline it is held against and the factor it must reach.
READERS: dict[str, Runner] = {
    "bcc loop": bcc_loop_runs,
    "bcc json script": bcc_json_runs,
    "events()": events_runs,
    "batches()": batches_runs,
    "engine run --output json": engine_json_runs,
}
# Perf buffers only (a ring buffer has no such setting): bcc's loop woken as the engine is,
# a second baseline beside bcc's default, reported with its own ratios.
SAME_WAKEUPS = "bcc loop, engine's wake-ups"
TARGETS = {
    "batches()": ("bcc loop", 5.0),
    "events()": ("bcc loop", 1.5),
    "engine run --output json": ("bcc json script", 2.0),
}


@attrs.frozen
class Sizes:
    seconds: float
    repeats: int
    steps: tuple[float, ...]  # fractions of the flat-out delivered rate tried as target rates


FULL = Sizes(seconds=3.0, repeats=3, steps=(1.0, 0.8, 0.6, 0.45, 0.3, 0.2, 0.1))
SMOKE = Sizes(seconds=0.5, repeats=1, steps=(0.5, 0.1))


def _load(kind: str, seconds: float, records: float) -> Load:
    """The hammer's load that makes ``records`` records per second."""
    return Load(seconds, records / records_per_call(kind))


def _sustained(runner: Runner, kind: str, hammer: Path, flat_out: float, sizes: Sizes) -> list[Run]:
    """Target rates, highest first, until one is delivered with zero loss."""
    tried: list[Run] = []
    for fraction in sizes.steps:
        run = runner(kind, hammer, [_load(kind, sizes.seconds, flat_out * fraction)])[0]
        tried.append(run)
        if run.lost == 0:
            break
    return tried


def _zero_loss_rate(runs: Sequence[Run]) -> float:
    """The highest rate the hammer achieved in a run with zero loss."""
    return max((r.achieved for r in runs if r.lost == 0), default=0.0)


def _flat_out_figure(kind: str, name: str, runs: list[Run], rates: dict[str, float]) -> Figure:
    baseline, factor = TARGETS.get(name, ("", 0.0))
    rate = rates[name]
    return Figure(
        f"throughput {kind}: {name}, delivered/s flat out",
        rate,
        "rec/s",
        rates[baseline] if baseline else None,
        baseline,
        f"≥ {factor:g}x {baseline}" if baseline else "",
        rate >= factor * rates[baseline] if baseline else None,
        f"hammer achieved {median([r.achieved for r in runs]):,.0f}/s; lost "
        f"{median([r.lost for r in runs]):,.0f} of {median([r.fired for r in runs]):,.0f}",
    )


def _same_wakeups_figure(name: str, rates: dict[str, float]) -> Figure:
    """``name`` against bcc's loop woken as the engine is (no target of its own: the issue's
    baseline is bcc's loop as scripts run it; this says how much of the ratio is wake-ups)."""
    return Figure(
        f"throughput perf: {name} against bcc's loop with the engine's wake-ups",
        rates[name],
        "rec/s",
        rates[SAME_WAKEUPS],
        SAME_WAKEUPS,
        note="both woken every PERF_WAKEUP_EVENTS records per CPU",
    )


def measure(kind: str, hammer: Path, sizes: Sizes) -> tuple[list[Figure], dict[str, Any]]:
    """Flat-out delivered/s of every reader (median of repeats, interleaved so that all see
    the same noise), then the highest rate bcc's loop sustains with zero loss, and what the
    engine's in-process readers lose at that rate."""
    flat = Load(sizes.seconds)
    readers = dict(READERS)
    if kind == "perf":
        readers[SAME_WAKEUPS] = bcc_loop_engine_wakeups_runs
    runs: dict[str, list[Run]] = {name: [] for name in readers}
    for _ in range(sizes.repeats):
        for name, runner in readers.items():
            runs[name] += runner(kind, hammer, [flat])
    rates = {name: median([r.rate for r in rs]) for name, rs in runs.items()}
    figures = [_flat_out_figure(kind, name, rs, rates) for name, rs in runs.items()]
    if kind == "perf":
        figures += [_same_wakeups_figure(name, rates) for name in ("events()", "batches()")]
    bcc_tried = _sustained(bcc_loop_runs, kind, hammer, rates["bcc loop"], sizes)
    sustained = _zero_loss_rate(bcc_tried)
    at_bcc_rate: dict[str, Run] = {}
    for name in ("events()", "batches()"):
        run = READERS[name](kind, hammer, [_load(kind, sizes.seconds, sustained)])[0]
        at_bcc_rate[name] = run
        figures.append(
            Figure(
                f"throughput {kind}: {name} lost at bcc loop's zero-loss rate",
                run.lost,
                "records",
                target="0",
                met=run.lost == 0 and sustained > 0,
                note=f"bcc loop sustained {sustained:,.0f}/s; hammer achieved "
                f"{run.achieved:,.0f}/s here",
            )
        )
    details = {
        "flat_out": {name: [r.to_json() for r in rs] for name, rs in runs.items()},
        "bcc_rate_search": [r.to_json() for r in bcc_tried],
        "at_bcc_zero_loss_rate": {name: r.to_json() for name, r in at_bcc_rate.items()},
    }
    return figures, details
