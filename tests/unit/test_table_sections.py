"""The live table's per-map sections: a column per field, sorted, capped, fitted to the
terminal's width."""

from __future__ import annotations

import re
from typing import Any

import pytest

from engine.cli.main import main
from engine.cli.sections import SortKey, parse_sort
from engine.cli.table import LiveTable
from engine.errors import SortError
from engine.gadget.model import Gadget
from tests.support.constants import EXAMPLES

GADGETS = [Gadget.from_file(EXAMPLES / name) for name in ("execsnoop.c", "tc_bytes.c")]
BOX = {"id": "b" * 64, "name": "engine-test-0123abcd-box"}


def _table(**options: Any) -> LiveTable:
    table = LiveTable("execsnoop.c, tc_bytes.c", clock=lambda: 0.0, **options)
    for i in range(12):
        data = {"pid": 100 + i, "ppid": 1, "uid": 0, "mntns_id": 4026532254, "comm": "sh"}
        data["filename"] = f"/usr/local/lib/a/rather/long/path/to/the/program-{i:02}"
        table.observe({"type": "event", "gadget": "execsnoop", "source": "events", "data": data})
        packet = {"ifindex": 7, "direction": i % 2, "len": [60, 342, 98][i % 3], "protocol": 1}
        event = {"type": "event", "gadget": "tc_bytes", "source": "packets", "data": packet}
        table.observe({**event, "container": BOX})
    return table


def _section(lines: list[str], title: str) -> list[list[str]]:
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    end = next((i for i in range(start, len(lines)) if not lines[i]), len(lines))
    return [line.split() for line in lines[start + 1 : end]]


def test_each_map_has_its_columns_sorted_and_capped() -> None:
    table = _table(sort=(SortKey("len", True), SortKey("direction", False)), max_rows=5)
    lines = table.render(160, 60)
    packets = _section(lines, "tc_bytes/packets  12 events  sorted by -len,direction")
    assert packets[0] == ["CONTAINER", "IFINDEX", "DIRECTION", "LEN", "PROTOCOL"]
    assert [(row[3], row[2]) for row in packets[1:]] == [
        ("342", "0"),
        ("342", "0"),
        ("342", "1"),
        ("342", "1"),
        ("98", "0"),
    ]
    # No `len` in an exec: its section is the newest execs, unsorted.
    execs = _section(lines, "execsnoop/events  12 events")
    assert execs[0] == ["CONTAINER", "PID", "PPID", "UID", "MNTNS_ID", "COMM", "FILENAME"]
    assert [row[1] for row in execs[1:]] == ["107", "108", "109", "110", "111"]
    assert execs[-1][-1] == "/usr/local/lib/a/rather/long/path/to/the/program-11"


@pytest.mark.parametrize("width", [80, 160])
def test_every_line_fits_and_long_cells_are_cut(width: int) -> None:
    lines = _table().render(width, 40)
    assert all(len(line) <= width for line in lines)
    start = lines.index("execsnoop/events  12 events") + 2
    execs = lines[start : lines.index("", start)]
    assert len(execs) >= 5
    if width == 80:  # the widest column, the file name, is narrowed to fit
        assert all(re.search(r" /usr/local/\S+\u2026$", line) for line in execs), execs
    else:
        assert all(re.search(r" /usr/local/\S+/program-\d\d$", line) for line in execs), execs


def test_the_sections_share_the_height() -> None:
    lines = _table().render(100, 24)
    assert len(lines) <= 24
    assert len(_section(lines, "execsnoop/events")) == len(_section(lines, "tc_bytes/packets"))


def test_bad_sort_exit_2_before_compiling(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SortError, match=r"--sort '-nope': no field 'nope'; execsnoop/events"):
        parse_sort("-nope", GADGETS)
    assert parse_sort("-len,pid", GADGETS) == (SortKey("len", True), SortKey("pid", False))
    assert main(["run", str(EXAMPLES / "execsnoop.c"), "--sort", ","]) == 2
    assert "--sort ',': is not a comma-separated list" in capsys.readouterr().err
