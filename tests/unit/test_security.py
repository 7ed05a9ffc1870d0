"""Security checks without privileges: capability parsing, trusted files owned by this user,
TC verdict warnings, pyroute2 never asked to create a netns, and the gadget parser fuzzed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.cli.main import main
from engine.errors import GadgetParseError, MissingCapabilitiesError, UntrustedFileError
from engine.gadget.model import Gadget
from engine.gadget.tc_returns import tc_return_warnings
from engine.kernel.security import (
    REQUIRED,
    Capability,
    check_trusted,
    effective_capabilities,
    require_capabilities,
)

ROOT = Path(__file__).resolve().parents[2]

STATUS = "Name:\tpython3\nCapInh:\t0000000000000000\nCapEff:\t{:016x}\nCapBnd:\t0\n"
ALL = sum(1 << c.value for c in Capability)


def test_capabilities_read_from_capeff() -> None:
    assert effective_capabilities(STATUS.format(0x1234)) == 0x1234
    require_capabilities(STATUS.format(ALL))


def test_every_missing_capability_is_named_at_once() -> None:
    without = ALL & ~(1 << Capability.CAP_BPF) & ~(1 << Capability.CAP_NET_ADMIN)
    with pytest.raises(MissingCapabilitiesError) as exc:
        require_capabilities(STATUS.format(without))
    assert exc.value.missing == (Capability.CAP_NET_ADMIN, Capability.CAP_BPF)
    assert str(exc.value).startswith("missing capabilities: CAP_NET_ADMIN, CAP_BPF (")


def test_none_at_all() -> None:
    with pytest.raises(MissingCapabilitiesError) as exc:
        require_capabilities(STATUS.format(0))
    assert set(exc.value.missing) == set(REQUIRED)
    assert Capability.CAP_SYS_NICE not in exc.value.missing  # wanted, not required


def _gadget(tmp_path: Path, mode: int = 0o644) -> Path:
    folder = tmp_path / "gadgets"
    folder.mkdir(mode=0o755, exist_ok=True)
    folder.chmod(0o755)
    path = folder / "g.c"
    path.write_text('SEC("tracepoint/a/b")\nint f(void *ctx) { return 0; }\n')
    path.chmod(mode)
    return path


def test_own_file_in_own_directory_is_trusted(tmp_path: Path) -> None:
    check_trusted(_gadget(tmp_path))


@pytest.mark.parametrize("mode", [0o666, 0o664, 0o646])
def test_file_writable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = _gadget(tmp_path, mode)
    with pytest.raises(UntrustedFileError, match=r"writable by .* \(mode 0"):
        check_trusted(path)


def test_directory_writable_by_others_is_refused(tmp_path: Path) -> None:
    path = _gadget(tmp_path)
    path.parent.chmod(0o777)
    with pytest.raises(UntrustedFileError) as exc:
        check_trusted(path)
    assert exc.value.culprit == str(path.parent)
    assert "mode 0777" in str(exc.value)


def test_sticky_directory_holding_an_own_file_is_accepted(tmp_path: Path) -> None:
    path = _gadget(tmp_path)
    path.parent.chmod(0o1777)
    check_trusted(path)


def test_link_into_an_open_directory_is_refused(tmp_path: Path) -> None:
    target = _gadget(tmp_path)
    target.parent.chmod(0o777)
    safe = tmp_path / "safe"
    safe.mkdir()
    link = safe / "g.c"
    link.symlink_to(target)
    with pytest.raises(UntrustedFileError) as exc:
        check_trusted(link)
    assert exc.value.culprit == str(target.parent)


def test_cli_refuses_before_running_anything_and_flag_allows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gadget = _gadget(tmp_path, 0o666)
    hook = tmp_path / "gadgets" / "hooks.py"
    hook.write_text("raise SystemExit('the hook file ran')\n")
    assert main(["run", str(gadget), "--hook", str(hook)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "refused: writable by others" in err
    assert "--allow-untrusted-files" in err
    # Allowed: the file is read, and the hook file's own problem is what stops the run.
    gadget.chmod(0o644)
    hook.chmod(0o666)
    assert main(["run", str(gadget), "--hook", str(hook)]) == 2
    assert f"{hook}: refused" in capsys.readouterr().err


CLASSIFIERS = """\
SEC("classifier/ingress/a")
int a(struct __sk_buff *skb)
{
    if (skb->len > 100)
        return TC_ACT_SHOT;   /* drops: others never see it */
    // return TC_ACT_OK; in a comment is fine
    return TC_ACT_UNSPEC;
}

SEC("classifier/egress/b")
int b(struct __sk_buff *skb) { return -1; }

SEC("classifier/egress/c")
int c(struct __sk_buff *skb) { return TC_ACT_OK; }

SEC("tracepoint/a/b")
int t(void *ctx) { return 1; }
"""


def test_tc_verdicts_other_than_unspec_are_warned_with_line() -> None:
    warnings = tc_return_warnings(Gadget.from_source(CLASSIFIERS, "tc.c"))
    assert [(w.line, w.function, w.value) for w in warnings] == [
        (5, "a", "TC_ACT_SHOT"),
        (14, "c", "TC_ACT_OK"),
    ]
    assert str(warnings[0]).startswith("tc.c:5: classifier 'a' returns TC_ACT_SHOT: only")


def test_example_classifiers_pass_packets_on() -> None:
    assert tc_return_warnings(Gadget.from_file(ROOT / "examples" / "tc_bytes.c")) == []


def test_the_engine_never_uses_pyroute2() -> None:
    """IPRoute(netns=PATH) defaults to flags=O_CREAT: a vanished path would become a new
    netns. The engine speaks rtnetlink itself (engine/netns/netlink.py), so no such handle
    can exist; nothing imports pyroute2."""
    for path in (ROOT / "engine").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n.split(".")[0] == "pyroute2" for n in names), f"{path}:{node.lineno}"


@given(st.text())
def test_gadget_parser_never_crashes(source: str) -> None:
    try:
        gadget = Gadget.from_source(source, "fuzz.c")
    except GadgetParseError as exc:
        assert all(p.line >= 1 for p in exc.problems)
    else:
        assert gadget.programs
