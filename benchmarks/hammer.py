"""The load generator: ``hammer.c``, compiled with gcc when the benchmarks start."""

from __future__ import annotations

import subprocess
from pathlib import Path

import attrs

SOURCE = Path(__file__).with_name("hammer.c")


def build_hammer(workdir: Path) -> Path:
    """Compile hammer.c into ``workdir``; returns the executable's path."""
    workdir.mkdir(parents=True, exist_ok=True)
    exe = workdir / "hammer"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(SOURCE)], check=True)
    return exe


@attrs.frozen
class Load:
    """What a hammer run asked for: seconds, and calls per second (0: as fast as it can)."""

    seconds: float
    rate: float = 0.0

    def argv(self, exe: Path) -> list[str]:
        return [str(exe), f"{self.seconds}", f"{self.rate:.0f}"]


@attrs.frozen
class Done:
    """What a hammer run did: calls made, over how many seconds."""

    calls: int
    seconds: float

    @classmethod
    def parse(cls, output: bytes) -> Done:
        calls, seconds = output.split()
        return cls(int(calls), float(seconds))
