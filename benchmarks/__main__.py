"""``python -m benchmarks [--smoke] [--only NAME ...] --out DIR``: run, write results.json/.md."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from benchmarks import (
    churn,
    containers,
    idle,
    leaks,
    netns_churn,
    origin_cost,
    startup,
    throughput,
)
from benchmarks.hammer import build_hammer
from benchmarks.results import Report

log = logging.getLogger(__name__)
BENCHMARKS = ("throughput", "idle", "startup", "churn", "netns-churn", "leaks", "origin")
# Containers started per churn rate (per second): enough for a p99 at each, within minutes.
CHURN = {1.0: 30, 5.0: 50, float(churn.MAX_RATE): 100}
CYCLES = 500


def run(smoke: bool, only: list[str], out: Path) -> Report:
    """Each chosen benchmark in turn; results are written after each, so a failure keeps them."""
    report = Report(smoke=smoke)
    chosen = [b for b in BENCHMARKS if not only or b in only]
    docker_missing = containers.docker_ready()
    for name in chosen:
        if name in NEEDS_DOCKER and docker_missing is not None:
            report.skipped[name] = docker_missing
            continue
        try:
            STEPS[name](report, smoke)
        except Exception as exc:
            log.exception("benchmark %s failed", name)
            report.skipped[name] = f"failed: {exc!r}"
        report.write(out)
    report.write(out)
    return report


def _throughput(report: Report, smoke: bool) -> None:
    sizes = throughput.SMOKE if smoke else throughput.FULL
    with tempfile.TemporaryDirectory(prefix="engine-bench-") as work:
        hammer = build_hammer(Path(work))
        for kind in ("ringbuf", "perf"):
            figures, details = throughput.measure(kind, hammer, sizes)
            report.figures += figures
            report.details[f"throughput_{kind}"] = details


def _idle(report: Report, smoke: bool) -> None:
    count, seconds = (2, 2.0) if smoke else (50, 10.0)
    figures, details = idle.measure(count, seconds)
    report.figures += figures
    report.details["idle"] = details


def _startup(report: Report, smoke: bool) -> None:
    figures, details, skipped = startup.measure(1, limit=2) if smoke else startup.measure(3)
    report.figures += figures
    report.details["startup"] = details
    report.skipped.update(skipped)


def _churn(report: Report, smoke: bool) -> None:
    rates = {5.0: 3} if smoke else CHURN
    for rate, count in rates.items():
        figures, details = churn.measure_churn([rate], count)
        report.figures += figures
        report.details.setdefault("churn", {}).update(details)
    if not smoke:
        # The daemon's maximum once more, the engine's attach path real-time.
        figures, details = churn.measure_churn([float(churn.MAX_RATE)], 100, realtime=True)
        report.figures += figures
        report.details.setdefault("churn", {}).update(details)


def _netns_churn(report: Report, smoke: bool) -> None:
    if smoke:
        figures, details = netns_churn.measure(
            (10.0,), seconds=0.5, baseline_count=5, realtime=(10.0,)
        )
    else:
        # 100/s once more with the attach path real-time (--attach-priority realtime).
        figures, details = netns_churn.measure(realtime=(100.0,))
    report.figures += figures
    report.details["netns_churn"] = details


def _leaks(report: Report, smoke: bool) -> None:
    figures, details = leaks.measure_leaks(2 if smoke else CYCLES)
    report.figures += figures
    report.details["leaks"] = details


def _origin(report: Report, smoke: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="engine-bench-") as work:
        hammer = build_hammer(Path(work))
        figures, details = origin_cost.measure(hammer, rounds=1 if smoke else origin_cost.ROUNDS)
    report.figures += figures
    report.details["origin_cost"] = details


STEPS: dict[str, Callable[[Report, bool], None]] = {
    "throughput": _throughput,
    "idle": _idle,
    "startup": _startup,
    "churn": _churn,
    "netns-churn": _netns_churn,
    "leaks": _leaks,
    "origin": _origin,
}
NEEDS_DOCKER = frozenset({"idle", "churn", "leaks"})


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
