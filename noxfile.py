"""Sessions: ``nox -s lint``, ``tests``, ``bench``, ``bench_smoke``, ``soak``.

They run in the project's own environment, .venv (made by scripts/setup from Debian's
/usr/bin/python3 with --system-site-packages so that it sees python3-bpfcc): nox creates no
virtualenv of its own (``default_venv_backend = "none"``) and every tool runs with the
interpreter that runs nox, ``.venv/bin/nox``.
"""

from __future__ import annotations

import sys

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "tests"]

PY = sys.executable
SOURCES = ["engine", "tests", "noxfile.py", "benchmarks"]


@nox.session
def lint(session: nox.Session) -> None:
    session.run(PY, "-m", "ruff", "check", *SOURCES)
    session.run(PY, "-m", "ruff", "format", "--check", *SOURCES)
    session.run(PY, "-m", "mypy", "--strict", *SOURCES)


@nox.session
def tests(session: nox.Session) -> None:
    session.run(PY, "-m", "pytest", "-p", "no:cacheprovider", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """The full benchmark run (needs root, bcc, Docker): bench-results/results.{json,md}."""
    session.run(PY, "-m", "benchmarks", "--out", "bench-results", *session.posargs)


@nox.session
def bench_smoke(session: nox.Session) -> None:
    """Tiny sizes, under a minute: bench-results/smoke/."""
    session.run(PY, "-m", "benchmarks", "--smoke", "--out", "bench-results/smoke", *session.posargs)


@nox.session
def soak(session: nox.Session) -> None:
    """The soak of tests/faults at full size: 1,000 container cycles (about 10 minutes)."""
    session.run(
        PY,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "tests/faults/test_soak.py",
        *session.posargs,
        env={"ENGINE_SOAK_CYCLES": "1000"},
    )
