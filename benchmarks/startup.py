"""(6) Start-up: compile + load, and attach, of each example gadget.

For each example whose program kinds this kernel runs: the engine's compile + load
(``load_sync``) and its whole start (``open_engine`` until it yields: compile, load, attach);
attach is the difference. Baseline in the same run: bcc compiling the same text
(``BPF(text=...)``, which loads nothing by itself).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import trio

from benchmarks.results import Figure, median
from engine.bcc.loader import full_source, load_sync
from engine.engine import open_engine
from engine.gadget.model import Gadget
from engine.kernel.features import probe_features
from engine.kernel.skb_netns import extra_source

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _bcc_compile(gadget: Gadget, extra: list[str]) -> float:
    from bcc import BPF

    t0 = time.perf_counter()
    bpf = BPF(text=full_source(gadget, extra))
    elapsed = time.perf_counter() - t0
    bpf.cleanup()
    return elapsed


def _engine_load(gadget: Gadget, extra: list[str]) -> float:
    t0 = time.perf_counter()
    loaded = load_sync(gadget, extra_source=extra)
    elapsed = time.perf_counter() - t0
    loaded.close()
    return elapsed


async def _engine_start(gadget: Gadget) -> float:
    t0 = time.perf_counter()
    async with open_engine(gadget, containers=False):
        return time.perf_counter() - t0


def measure(
    repeats: int, limit: int | None = None
) -> tuple[list[Figure], dict[str, Any], dict[str, str]]:
    """Up to ``limit`` examples that load here (the smoke run keeps to a few)."""
    features = probe_features()
    figures: list[Figure] = []
    details: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for path in sorted(EXAMPLES.glob("*.c")):
        if limit is not None and len(details) >= limit:
            break
        gadget = Gadget.from_file(path)
        missing = [
            f"{s.kind.value}: {support.reason}"
            for s in gadget.programs
            if not (support := features.supports(s.kind)).available
        ]
        if missing:
            skipped[f"start-up {path.name}"] = "; ".join(missing)
            continue
        extra = extra_source(gadget)  # what the engine compiles in front of this gadget
        try:
            bcc = [_bcc_compile(gadget, extra) for _ in range(repeats)]
            load = [_engine_load(gadget, extra) for _ in range(repeats)]
            start = [trio.run(_engine_start, gadget) for _ in range(repeats)]
        except Exception as exc:  # bcc raises bare Exception; one example must not stop the rest
            skipped[f"start-up {path.name}"] = f"does not load here: {str(exc).splitlines()[0]}"
            continue
        details[path.name] = {"bcc_compile_s": bcc, "engine_load_s": load, "engine_start_s": start}
        figures += [
            Figure(
                f"start-up {path.name}: compile + load",
                median(load) * 1000,
                "ms",
                median(bcc) * 1000,
                "bcc compile",
            ),
            Figure(
                f"start-up {path.name}: attach",
                max(median(start) - median(load), 0.0) * 1000,
                "ms",
                note="engine start - compile + load; per-netns programs attach later, per netns",
            ),
        ]
    return figures, details, skipped
