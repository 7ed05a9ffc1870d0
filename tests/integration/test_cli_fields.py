"""``engine run --fields`` on exec records of a real container, in the JSON lines: the data
keeps the named fields in their order; without it, the struct's padding is left out."""

from __future__ import annotations

import pytest
import trio

from tests.support.constants import EXAMPLES
from tests.support.docker import Containers
from tests.support.process import engine_process

pytestmark = [pytest.mark.integration, pytest.mark.docker]

EXECSNOOP = str(EXAMPLES / "execsnoop.c")


async def _execs_of(containers: Containers, name: str, *options: str) -> list[dict[str, object]]:
    """The data of the ``/bin/true`` execs in container ``name`` while the engine runs."""
    with trio.fail_after(60):
        async with engine_process(EXECSNOOP, "--select", f"name={name}", *options) as run:
            await run.until(lambda: bool(run.of_type("attached")))
            await containers.exec(name, "/bin/true")
            await run.until(lambda: bool(run.events("events")))
            assert await run.stop() == 0, run.stderr
    return [e["data"] for e in run.events("events")]


async def test_fields_pick_and_order_the_data_and_padding_is_left_out(
    containers: Containers,
) -> None:
    box = containers.start("box", "sleep", "300")
    plain = await _execs_of(containers, box)
    assert [list(data) for data in plain] == [
        ["pid", "ppid", "uid", "mntns_id", "comm", "filename"]
    ]  # execsnoop's struct has `u32 pad` after uid: layout, not data
    picked = await _execs_of(containers, box, "--fields", "filename,pad,comm")
    assert len(picked) == 1
    assert list(picked[0]) == ["filename", "pad", "comm"]  # naming it brings padding back
    assert (picked[0]["filename"], picked[0]["pad"]) == ("/bin/true", 0)
