"""The `vmkernel` integration tests, run inside Debian's 6.1 kernel and checked from the host.

One VM boot per session (scripts/vm-run) runs every test under tests/integration marked
`vmkernel`; the tests here read its JUnit report and fail listing whatever failed inside.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import attrs
import pytest

from tests.support.constants import ROOT
from tests.support.requirements import unavailable

pytestmark = pytest.mark.vm

log = logging.getLogger(__name__)

# The whole run (boot, compiling gadgets under emulation, shutdown) must stay under 15 minutes.
VM_TIMEOUT_SECONDS = 840
BUDGET_SECONDS = 900
REFUSED_ON_THE_HOST = ["kprobe", "kretprobe", "fentry", "fexit", "lsm"]


@attrs.frozen
class CaseResult:
    """One in-VM test case from the JUnit report; ``outcome`` is passed/failed/error/skipped."""

    name: str
    outcome: str
    message: str

    @classmethod
    def from_junit(cls, case: ET.Element) -> CaseResult:
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        for outcome in ("failure", "error", "skipped"):
            found = case.find(outcome)
            if found is not None:
                text = found.get("message") or found.text or ""
                return cls(name, "failed" if outcome == "failure" else outcome, text)
        return cls(name, "passed", "")


@attrs.frozen
class VmRun:
    """What one scripts/vm-run of the `vmkernel` tests left behind."""

    returncode: int
    out: Path
    output: str
    cases: tuple[CaseResult, ...]
    timing: dict[str, float]

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


def _timing(path: Path) -> dict[str, float]:
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().split())
    return {key: float(value) for key, value in pairs}


def _cases(junit: Path) -> tuple[CaseResult, ...]:
    if not junit.exists():
        return ()
    return tuple(CaseResult.from_junit(c) for c in ET.parse(junit).getroot().iter("testcase"))


@pytest.fixture(scope="session")
def vm_run(tmp_path_factory: pytest.TempPathFactory) -> VmRun:
    """Boot the 6.1 VM once and run the `vmkernel` tests inside it."""
    if os.environ.get("ENGINE_IN_VM") == "1":
        pytest.skip("already inside the VM")
    if os.geteuid() != 0:
        unavailable("needs root (the VM's tests load BPF programs as the same user)")
    if not any(Path("/boot").glob("vmlinuz-6.1.*-amd64")):
        unavailable("needs Debian's 6.1 kernel in /boot (apt-get install linux-image-amd64)")
    if shutil.which("qemu-system-x86_64") is None:
        unavailable("needs qemu-system-x86_64 (apt-get install qemu-system-x86)")
    if not (ROOT / ".venv/bin/vng").exists():
        unavailable("needs virtme-ng in .venv (pip install -e '.[dev]')")
    # Python imports crawl over 9p under emulation: collect only the files that mark tests.
    files = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests/integration").glob("test_*.py")
        if "vmkernel" in path.read_text()
    )
    out = tmp_path_factory.mktemp("vm")
    junit = out / "junit.xml"
    command = [
        str(ROOT / "scripts/vm-run"),
        "--timeout",
        str(VM_TIMEOUT_SECONDS),
        "--out",
        str(out),
        "--",
        ".venv/bin/python",
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-m",
        "vmkernel",
        f"--junitxml={junit}",
        *files,
    ]
    proc = subprocess.run(
        command,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=VM_TIMEOUT_SECONDS + 60,
    )
    output = (out / "output").read_text() if (out / "output").exists() else proc.stdout
    run = VmRun(proc.returncode, out, output + proc.stderr, _cases(junit), _timing(out / "timing"))
    log.info("VM run: exit %d, timing %s, results in %s", run.returncode, run.timing, out)
    return run


def test_vm_ran_the_vmkernel_tests_in_time(vm_run: VmRun) -> None:
    assert vm_run.cases, f"no test results from the VM (exit {vm_run.returncode}):\n{vm_run.tail()}"
    assert vm_run.timing.get("total_seconds", BUDGET_SECONDS) < BUDGET_SECONDS, vm_run.timing


def test_every_vmkernel_test_passed(vm_run: VmRun) -> None:
    bad = [c for c in vm_run.cases if c.outcome in ("failed", "error")]
    report = "\n".join(f"{c.outcome}: {c.name}\n    {c.message}" for c in bad)
    assert not bad, f"{len(bad)} of {len(vm_run.cases)} in-VM tests did not pass:\n{report}"
    # A crash or a collection error may leave no case behind: the exit status still tells.
    assert vm_run.returncode == 0, f"exit {vm_run.returncode}:\n{vm_run.tail()}"


def test_features_report_the_debian_kernel_right(vm_run: VmRun) -> None:
    smoke = [c for c in vm_run.cases if c.name.endswith("::test_features_on_the_debian_kernel")]
    assert [c.outcome for c in smoke] == ["passed"], smoke
    probed = json.loads((vm_run.out / "features.json").read_text())
    assert probed["release"].startswith("6.1."), probed["release"]
    available = {row["kind"]: row["available"] for row in probed["kinds"]}
    assert {kind: available[kind] for kind in REFUSED_ON_THE_HOST} == dict.fromkeys(
        REFUSED_ON_THE_HOST, True
    )
