"""``python -m benchmarks [--smoke] [--only NAME ...] --out DIR``: run, write results.json/.md."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from benchmarks import containers, idle, startup, throughput
from benchmarks.hammer import build_hammer
from benchmarks.results import Report

BENCHMARKS = ("throughput", "idle", "startup")


def run(smoke: bool, only: list[str], out: Path) -> Report:
    report = Report(smoke=smoke)
    chosen = only or list(BENCHMARKS)
    if "throughput" in chosen:
        sizes = throughput.SMOKE if smoke else throughput.FULL
        with tempfile.TemporaryDirectory(prefix="engine-bench-") as work:
            hammer = build_hammer(Path(work))
            for kind in ("ringbuf", "perf"):
                figures, details = throughput.measure(kind, hammer, sizes)
                report.figures += figures
                report.details[f"throughput_{kind}"] = details
    if "idle" in chosen:
        why = containers.docker_ready()
        if why is None:
            count, seconds = (2, 2.0) if smoke else (50, 10.0)
            figures, details = idle.measure(count, seconds)
            report.figures += figures
            report.details["idle"] = details
        else:
            report.skipped["idle"] = why
    if "startup" in chosen:
        figures, details, skipped = startup.measure(1 if smoke else 3)
        report.figures += figures
        report.details["startup"] = details
        report.skipped.update(skipped)
    report.write(out)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CI), under a minute")
    parser.add_argument("--only", action="append", choices=BENCHMARKS, default=[])
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the mismatched-headers warning, once per compile
    report = run(args.smoke, args.only, args.out)
    sys.stdout.write(report.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
