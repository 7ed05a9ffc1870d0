"""The benchmarks' smoke run (tiny sizes) works and writes sane results, so they cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.constants import ROOT

pytestmark = pytest.mark.integration


def test_smoke_run_writes_sane_results(root: None, tmp_path: Path) -> None:
    out = tmp_path / "results"
    subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--out", str(out)],
        cwd=ROOT,
        check=True,
        timeout=180,
    )
    results = json.loads((out / "results.json").read_text())
    assert results["schema"] == 1
    assert results["smoke"] is True
    assert set(results["machine"]) == {"cpu", "nproc", "kernel", "python"}
    failed = {k: v for k, v in results["skipped"].items() if v.startswith("failed")}
    assert not failed
    figures = {f["name"]: f for f in results["figures"]}
    for f in figures.values():
        assert set(f) >= {"name", "value", "unit", "baseline", "ratio", "target", "met"}
        if "after Docker start event" not in f["name"]:
            # Attaching may precede Docker's start event (speculative attach): only that
            # latency can be negative.
            assert f["value"] >= 0, f
    for kind in ("ringbuf", "perf"):
        for reader in ("events()", "batches()", "engine run --output json"):
            flat = figures[f"throughput {kind}: {reader}, delivered/s flat out"]
            assert flat["value"] > 0
            assert flat["baseline"] > 0
        for reader, runs in results["details"][f"throughput_{kind}"]["flat_out"].items():
            made = [r["calls"] * r["records_per_call"] for r in runs]
            assert all(r["delivered"] > 0 for r in runs), reader
            assert all(m >= r["delivered"] for m, r in zip(made, runs, strict=True)), reader
    assert any(name.startswith("start-up ") for name in figures)
    table = (out / "results.md").read_text()
    assert "| figure | value |" in table
