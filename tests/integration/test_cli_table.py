"""The live table under a real pseudo-terminal at 80 and at 160 columns: a section per gadget
map with a column per field, sorted and capped, only the filtered events, every line within
the terminal's width."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest
import trio

from tests.support.constants import BRIDGE, EXAMPLES
from tests.support.docker import Containers
from tests.support.hooks import hooked, seen_hook
from tests.support.terminal import on_terminal

pytestmark = [pytest.mark.integration, pytest.mark.docker]

# A program name too long for an 80-column row, whole at 160.
LONG = "/tmp/" + "a-program-with-a-name-long-enough-to-be-cut" + "-at-eighty-columns"
# Ethernet, IP and ICMP headers around a ping's payload, as the classifier counts them.
HEADERS = 14 + 20 + 8


def _section(frame: list[str], title: str) -> list[list[str]]:
    start = next(i for i, line in enumerate(frame) if line.startswith(title))
    end = next(i for i in range(start, len(frame)) if not frame[i].strip())
    return [line.split() for line in frame[start + 1 : end]]


@pytest.mark.parametrize("columns", [80, 160])
async def test_table_sections_sorted_filtered_and_fitted(
    containers: Containers, tmp_path: Path, columns: int
) -> None:
    kept = containers.start("kept", "sleep", "300")
    other = containers.start("other", "sleep", "300")
    args = [
        str(EXAMPLES / "execsnoop.c"),
        str(EXAMPLES / "tc_bytes.c"),
        "--select",
        *containers.selection,
        "--filter",
        f"container.name=={kept}",
        "--filter",
        "protocol==1",
        "--sort=-len,direction",  # with "=": a value that starts with "-" is not an option
        "--max-rows",
        "6",
        "--hook",
        seen_hook(tmp_path),
    ]
    with trio.fail_after(90):
        async with on_terminal(columns, 60, *args) as (engine, terminal):
            await engine.line(r"attached 1 program in")
            # The classifiers attach in each container's netns a little later: a small ping
            # until the hook sees one (sorted by -len, these stay below the rows checked).
            while not any(h[1] == "packets" for h in hooked(engine)):
                await containers.exec(kept, "ping", "-c", "1", "-s", "10", BRIDGE)
            for name in (kept, other):
                await containers.exec(name, "ln", "-s", "/bin/true", LONG)
                # busybox under a name it has no applet for exits 127, after the exec.
                await containers.exec(name, LONG, check=False)
                for size in (100, 200, 300):
                    await containers.exec(name, "ping", "-c", "2", "-s", str(size), BRIDGE)
            # The hook sees what the table sees: wait for the biggest pings' four packets.
            await engine.until(
                lambda: (
                    sum(1 for h in hooked(engine) if h[1] == "packets" and h[3]["len"] == 342) == 4
                )
            )
            engine.process.send_signal(signal.SIGINT)
            assert await engine.process.wait() == 0
    frame = terminal.last_frame()
    assert all(len(line) <= columns for line in frame), frame
    assert {h[2] for h in hooked(engine)} == {kept}
    title = next(line for line in frame if line.startswith("tc_bytes/packets  "))
    assert re.fullmatch(r"tc_bytes/packets  \d+ events  sorted by -len,direction", title)
    packets = _section(frame, title)
    assert packets[0] == ["CONTAINER", "IFINDEX", "DIRECTION", "LEN", "PROTOCOL"]
    big, middle = HEADERS + 300, HEADERS + 200
    assert [(row[0], row[3], row[2]) for row in packets[1:]] == [
        (kept, str(big), "0"),
        (kept, str(big), "0"),
        (kept, str(big), "1"),
        (kept, str(big), "1"),
        (kept, str(middle), "0"),
        (kept, str(middle), "0"),
    ]
    execs = _section(frame, "execsnoop/events  ")
    assert execs[0] == ["CONTAINER", "PID", "PPID", "UID", "MNTNS_ID", "COMM", "FILENAME"]
    assert {row[0] for row in execs[1:]} == {kept}  # the other container's execs: filtered
    cut = [row[-1] for row in execs[1:] if row[-1].endswith("\u2026")]
    whole = [row[-1] for row in execs[1:] if row[-1] == LONG]
    if columns == 80:  # the file name, the widest column, is cut to fit
        assert len(cut) == 1 and not whole, execs
        assert LONG.startswith(cut[0][:-1]) and len(cut[0]) >= 8
    else:
        assert whole == [LONG] and not cut, execs
