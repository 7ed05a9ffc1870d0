"""``python -m benchmarks [--smoke] [--only NAME ...] --out DIR``: run, write results.json/.md."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from benchmarks import churn, containers, idle, startup, throughput
from benchmarks.hammer import build_hammer
from benchmarks.results import Report

BENCHMARKS = ("throughput", "idle", "startup", "churn", "leaks")
# Containers started per churn rate (per second): enough for a p99 at each, within minutes.
CHURN = {1.0: 30, 5.0: 50, 20.0: 100}
CYCLES = 500


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
    docker_missing = containers.docker_ready()
    for name in ("idle", "churn", "leaks"):
        if name in chosen and docker_missing is not None:
            report.skipped[name] = docker_missing
    if docker_missing is None:
        _with_containers(report, chosen, smoke)
    if "startup" in chosen:
        figures, details, skipped = startup.measure(1 if smoke else 3)
        report.figures += figures
        report.details["startup"] = details
        report.skipped.update(skipped)
    report.write(out)
    return report


def _with_containers(report: Report, chosen: list[str], smoke: bool) -> None:
    if "idle" in chosen:
        count, seconds = (2, 2.0) if smoke else (50, 10.0)
        figures, details = idle.measure(count, seconds)
        report.figures += figures
        report.details["idle"] = details
    if "churn" in chosen:
        rates = {5.0: 3} if smoke else CHURN
        for rate, count in rates.items():
            figures, details = churn.measure_churn([rate], count)
            report.figures += figures
            report.details.setdefault("churn", {}).update(details)
    if "leaks" in chosen:
        figures, details = churn.measure_leaks(2 if smoke else CYCLES)
        report.figures += figures
        report.details["leaks"] = details


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
