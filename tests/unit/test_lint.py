"""The code base is ruff- and mypy --strict-clean: checked by the tests, not only by nox."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)


def test_ruff() -> None:
    result = _run(str(BIN / "ruff"), "check", "engine", "tests", "benchmarks", "noxfile.py")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    result = _run(str(BIN / "mypy"), "--strict", "engine")
    assert result.returncode == 0, result.stdout + result.stderr
