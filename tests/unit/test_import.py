"""`import engine` needs no bcc: unit tests and `engine check` run where bcc is absent."""

from __future__ import annotations

import subprocess
import sys

PROBE = """\
import sys
import engine
maps = open("/proc/self/maps").read()
print("bcc" in sys.modules, "libbcc.so" in maps)
"""


def test_import_engine_loads_neither_bcc_nor_libbcc() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
