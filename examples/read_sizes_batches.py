"""Sizes of read(2) per container as log2 histograms, from columnar batches.

    python examples/read_sizes_batches.py [--select SELECTOR ...] [--seconds N]

Runs examples/read_sizes.c and reads its ring buffer with ``engine.batches()``: each batch is
numpy columns (``batch.fields["size"]``) with each row's container (``batch.container``, an
index into ``batch.containers``), so the histogram is a few numpy calls per batch, however
many reads it holds. Prints ``ready`` on stderr once reading, then, when it stops (after
``--seconds``, or on Ctrl-C / SIGTERM), one JSON line per container:
``{"container": NAME or null, "reads": N, "buckets": {"4096-8191": N, ...}}``.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import trio

import engine

GADGET = Path(__file__).with_name("read_sizes.c")
BITS = 65  # a size's bit length: bucket k holds sizes in [2**(k-1), 2**k)


def add(histograms: dict[str | None, npt.NDArray[np.int64]], batch: engine.Batch) -> None:
    """Count the batch's sizes into each row's container's histogram."""
    _, bits = np.frexp(batch.fields["size"].astype(np.float64))  # size = m * 2**bits
    for index in np.unique(batch.container).tolist():
        rows = batch.container == index
        container = batch.containers[index]["name"] if index >= 0 else None
        counts = np.bincount(bits[rows], minlength=BITS)
        histograms[container] = histograms.get(container, np.zeros(BITS, np.int64)) + counts


def report(histograms: dict[str | None, npt.NDArray[np.int64]]) -> None:
    for container, counts in histograms.items():
        buckets = {f"{2 ** (k - 1)}-{2**k - 1}": int(n) for k, n in enumerate(counts) if n and k}
        line = {"container": container, "reads": int(counts.sum()), "buckets": buckets}
        print(json.dumps(line), flush=True)


async def main(select: list[str], seconds: float | None) -> None:
    histograms: dict[str | None, npt.NDArray[np.int64]] = {}
    async with (
        engine.open_engine(GADGET, select=select) as eng,
        eng.batches("reads") as batches,
    ):

        async def stop_on_signal_or_time(signals: AsyncIterator[int]) -> None:
            with trio.move_on_after(math.inf if seconds is None else seconds):
                async for _ in signals:
                    break
            eng.stop()  # the batches end, then the engine

        # Caught from here on, before "ready": the first signal stops the engine.
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            eng.start_soon(stop_on_signal_or_time, signals)
            print("ready", file=sys.stderr, flush=True)
            async for batch in batches:
                add(histograms, batch)
    report(histograms)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--select", action="append", default=[])
    parser.add_argument("--seconds", type=float)
    args = parser.parse_args()
    trio.run(main, args.select, args.seconds)
