"""``--fields``: names checked against the gadgets' structs before compiling; events' data cut
to them, in their order; other records untouched."""

from __future__ import annotations

import pytest

from engine.cli.fields import FieldChoice
from engine.cli.main import main
from engine.errors import FieldsError
from engine.gadget.model import Gadget
from tests.support.constants import EXAMPLES
from tests.support.refusals import refusal

GADGETS = [Gadget.from_file(EXAMPLES / name) for name in ("execsnoop.c", "tc_bytes.c")]


def _choice(text: str) -> FieldChoice:
    choice = FieldChoice.parse(text, GADGETS)
    assert choice is not None
    return choice


def test_events_keep_the_named_fields_in_the_given_order() -> None:
    choice = _choice("filename,pid,len")
    exec_event = {
        "type": "event",
        "gadget": "execsnoop",
        "data": {"pid": 1, "ppid": 0, "comm": "sh", "filename": "/bin/ls"},
    }
    packet = {"type": "event", "gadget": "tc_bytes", "data": {"ifindex": 3, "len": 60}}
    attached = {"type": "attached", "gadget": "execsnoop", "program": "trace_execve"}
    assert choice.pick(exec_event) == {**exec_event, "data": {"filename": "/bin/ls", "pid": 1}}
    assert list(choice.pick(exec_event)["data"]) == ["filename", "pid"]
    assert choice.pick(packet)["data"] == {"len": 60}
    assert choice.pick(attached) == attached
    assert exec_event["data"] == {"pid": 1, "ppid": 0, "comm": "sh", "filename": "/bin/ls"}


def test_naming_a_padding_member_keeps_padding() -> None:
    assert _choice("pid,pad").padding
    assert not _choice("pid").padding


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("pid,nope", "no field 'nope'; execsnoop/events has pid, ppid, uid, pad, mntns_id"),
        ("pid,,comm", "is not a comma-separated list of field names"),
        ("pid,comm,pid", "names pid more than once"),
    ],
)
def test_bad_fields_name_the_list_and_the_problem(text: str, problem: str) -> None:
    assert problem in refusal(FieldsError, lambda: FieldChoice.parse(text, GADGETS), text)


def test_run_with_bad_fields_or_filter_exit_2_before_compiling(
    capsys: pytest.CaptureFixture[str],
) -> None:
    execsnoop = str(EXAMPLES / "execsnoop.c")
    assert main(["run", execsnoop, "--fields", "pid,nope"]) == 2
    assert main(["run", execsnoop, "--filter", "pid==x"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "engine: --fields 'pid,nope': no field 'nope'; execsnoop/events has pid, ppid, uid,"
        " pad, mntns_id, comm, filename",
        "engine: --filter 'pid==x': pid is an integer, not 'x'",
    ]
