"""Figures and how they are written: ``results.json`` and a short Markdown table."""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs


@attrs.frozen
class Figure:
    """One measured figure, next to its baseline from the same run and its target."""

    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    def to_json(self) -> dict[str, Any]:
        return {**attrs.asdict(self), "ratio": self.ratio}


@attrs.define
class Report:
    """What one benchmark run produced: figures for the table, details for the JSON."""

    smoke: bool
    figures: list[Figure] = attrs.Factory(list)
    details: dict[str, Any] = attrs.Factory(dict)
    skipped: dict[str, str] = attrs.Factory(dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": 1,
            "smoke": self.smoke,
            "machine": machine(),
            "figures": [f.to_json() for f in self.figures],
            "details": self.details,
            "skipped": self.skipped,
        }

    def write(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(self.to_json(), indent=2) + "\n")
        (out / "results.md").write_text(self.markdown())

    def markdown(self) -> str:
        m = machine()
        lines = [
            f"Machine: {m['cpu']}, {m['nproc']} CPUs, kernel {m['kernel']}, "
            f"Python {m['python']}{' (smoke sizes)' if self.smoke else ''}",
            "",
            "| figure | value | baseline (same run) | ratio | target | met? |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for f in self.figures:
            base = "" if f.baseline is None else f"{_num(f.baseline)} ({f.baseline_name})"
            ratio = "" if f.ratio is None else f"{f.ratio:.2f}x"
            met = {None: "", True: "yes", False: "**no**"}[f.met]
            note = f" — {f.note}" if f.note else ""
            lines.append(
                f"| {f.name}{note} | {_num(f.value)} {f.unit} | {base} | {ratio} | "
                f"{f.target} | {met} |"
            )
        for name, why in self.skipped.items():
            lines.append(f"| {name} | skipped: {why} | | | | |")
        return "\n".join(lines) + "\n"


def _num(value: float) -> str:
    if value == int(value) and abs(value) >= 100:
        return f"{int(value):,}"
    return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
