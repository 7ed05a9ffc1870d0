"""The code base is ruff- and mypy --strict-clean: checked by the tests as `nox -s lint` checks
it, on the same paths."""

from __future__ import annotations

import subprocess
import sys

import pytest

from noxfile import SOURCES
from tests.support.constants import ROOT


@pytest.mark.parametrize(
    "tool",
    [
        ["ruff", "check"],
        ["ruff", "format", "--check"],
        ["mypy", "--strict"],
    ],
    ids=" ".join,
)
def test_clean(tool: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", *tool, *SOURCES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
