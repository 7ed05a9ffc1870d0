"""Sessions: ``nox -s lint``, ``tests``, ``bench``, ``bench_smoke``, ``soak``, ``stress``.

They run in the project's own environment, .venv (made by scripts/setup from Debian's
/usr/bin/python3 with --system-site-packages so that it sees python3-bpfcc): nox creates no
virtualenv of its own (``default_venv_backend = "none"``) and every tool runs with the
interpreter that runs nox, ``.venv/bin/nox``.
"""

from __future__ import annotations

import os
import sys

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "tests"]

PY = sys.executable
SOURCES = ["engine", "tests", "noxfile.py", "benchmarks"]
# The churn, race and flood tests (and the first-packet ones, after which a race once lost
# its record): each a miss under load that once hid behind an xfail mark.
STRESS = [
    "tests/faults/test_flood.py",
    "tests/faults/test_attach_races.py",
    "tests/integration/test_first_packet.py",
    "tests/integration/test_per_netns.py::test_netns_deleted_mid_attach",
    "tests/integration/test_per_netns.py::test_races_end_in_one_record_and_the_engine_goes_on",
    "tests/integration/test_per_netns.py::test_fifty_containers_churn_leaves_nothing",
]


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


@nox.session
def stress(session: nox.Session) -> None:
    """The churn, race and flood tests 20 times in a row (``ENGINE_STRESS_RUNS``), stopping
    at the first failure; needs root, bcc and Docker, and the shared lock."""
    runs = int(os.environ.get("ENGINE_STRESS_RUNS", "20"))
    for run in range(1, runs + 1):
        session.log(f"stress run {run} of {runs}")
        session.run(PY, "-m", "pytest", "-p", "no:cacheprovider", "-q", *STRESS, *session.posargs)
