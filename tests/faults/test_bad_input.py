"""Bad input that needs the kernel or privileges to be found: `engine run` answers with one
located message and exit 2 (exit 1 for missing capabilities), never a traceback; the API raises
the matching `EngineError` subclass. Bad input found without the kernel (section names, hook
files, selections, gadget paths, untrusted files) is in tests/unit."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from engine import open_engine
from engine.cli.main import main
from engine.errors import CompileError, TargetNotFoundError, UntrustedFileError, VerifierError
from tests.support.constants import EXAMPLES, ROOT

pytestmark = pytest.mark.integration


def _program(section: str, body: str = "return 0;") -> str:
    """A gadget of one program `f` in `section`; its body starts on line 4."""
    return f'SEC("{section}")\nint f(void *ctx)\n{{\n    {body}\n}}\n'


GETPPID = "tracepoint/syscalls/sys_enter_getppid"
CASES = {
    "compile": (
        _program(GETPPID, "return undeclared_thing;"),
        [r"bad\.c:4:\d+: error: use of undeclared identifier 'undeclared_thing'"],
    ),
    "verifier": (
        _program(GETPPID, "u64 *p = (u64 *)0x1234;\n    return *p;"),
        [r"program 'f' was rejected by the kernel \(errno 13\)", r"invalid mem access"],
    ),
}
# A target that does not exist: refused at the program's SEC line, naming what is missing.
MISSING = {
    "tracepoint": ("tracepoint/syscalls/sys_enter_no_such_call", "sys_enter_no_such_call"),
    "library": ("uprobe/libno_such_library:malloc", "libno_such_library"),
    "symbol": ("uprobe/libc:no_such_symbol_here", "no_such_symbol_here"),
    "usdt": ("usdt/libstdcxx:libstdcxx:no_such_probe", "no_such_probe"),
}
CASES |= {
    case: (_program(section), [r"bad\.c:1: program 'f'", missing])
    for case, (section, missing) in MISSING.items()
}


def _gadget(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.c"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("case", sorted(CASES))
def test_cli_says_where_and_exits_2(
    root: None, tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text, patterns = CASES[case]
    assert main(["run", _gadget(tmp_path, text), "--duration", "1"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for pattern in patterns:
        assert re.search(pattern, err), (pattern, err)


@pytest.mark.parametrize(
    ("case", "error"),
    [("compile", CompileError), ("verifier", VerifierError), ("tracepoint", TargetNotFoundError)],
)
async def test_api_raises_the_subclass(
    root: None, tmp_path: Path, case: str, error: type[Exception]
) -> None:
    with trio.fail_after(60), pytest.raises(error):
        async with open_engine(_gadget(tmp_path, CASES[case][0]), containers=False):
            pass


def test_tc_verdict_warned(root: None, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    text = (EXAMPLES / "tc_bytes.c").read_text().replace("return TC_ACT_UNSPEC;", "return 0;", 1)
    path = _gadget(tmp_path, text)
    line = text[: text.index("return 0;")].count("\n") + 1
    assert main(["run", path, "--duration", "0.5", "--select", "name=engine-test-none"]) == 0
    # Through logging: the CLI's handler prints it as "engine: WARNING: ..." on stderr.
    warning = f"{path}:{line}: classifier 'into_container' returns 0: only TC_ACT_UNSPEC"
    assert warning in caplog.text


@pytest.mark.parametrize("problem", ["missing", "directory", "latin1"])
def test_gadget_path_problems_exit_2(
    root: None, tmp_path: Path, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # An unreadable file: tests/unit/test_gadget.py (root reads anything).
    path = tmp_path / "g.c"
    if problem == "directory":
        path.mkdir()
    elif problem == "latin1":
        path.write_bytes(b"int x;\n// caf\xe9\n")
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    # One line after the progress line, naming the file.
    assert err.splitlines()[-1].startswith(f"engine: {path}"), err
    assert err.count("\n") == 2, err


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]


def _engine_as(prefix: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "engine", "run", str(EXAMPLES / "execsnoop.c"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=60,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )


def test_unprivileged_user_gets_one_line_naming_every_capability(root: None) -> None:
    done = _engine_as(NOBODY)
    assert done.returncode == 1, done.stderr
    assert done.stderr == (
        "engine: missing capabilities: CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF"
        " (the engine needs CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF; run it as"
        " root)\n"
    )


def test_root_without_bpf_and_net_admin_is_told_before_compiling(root: None) -> None:
    done = _engine_as(["setpriv", "--inh-caps=-bpf,-net_admin", "--bounding-set=-bpf,-net_admin"])
    assert done.returncode == 1, done.stderr
    assert "engine: missing capabilities: CAP_NET_ADMIN, CAP_BPF (" in done.stderr
    assert "compiling" not in done.stderr


def test_gadget_owned_by_another_user_is_refused_unless_allowed(
    root: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = Path(_gadget(tmp_path, (EXAMPLES / "execsnoop.c").read_text()))
    os.chown(path, 65534, 65534)
    assert main(["run", str(path), "--duration", "0.5"]) == 2
    err = capsys.readouterr().err
    assert f"engine: {path}: refused: owned by uid 65534;" in err
    assert "compiling" not in err
    assert main(["run", str(path), "--duration", "0.5", "--allow-untrusted-files"]) == 0


async def test_api_refuses_unless_trust_files(root: None, tmp_path: Path) -> None:
    path = _gadget(tmp_path, (EXAMPLES / "execsnoop.c").read_text())
    os.chmod(path, 0o666)
    with pytest.raises(UntrustedFileError):
        async with open_engine(path, containers=False):
            pass
    with trio.fail_after(60):
        async with open_engine(path, containers=False, trust_files=True) as eng:
            eng.stop()
