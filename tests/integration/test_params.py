"""A gadget parameter changes what a gadget reports, given at start (``params=``) and changed
while it runs (``set_param``): examples/read_sizes.c's ``min_size`` on the reads of ``dd`` in a
real container. (``--param`` on the command line: tests/integration/test_examples.py.)"""

from __future__ import annotations

import pytest
import trio

from engine.errors import ParamError
from tests.support.constants import EXAMPLES
from tests.support.docker import Containers
from tests.support.recorder import Recorder, recorded

pytestmark = [pytest.mark.integration, pytest.mark.docker]

SMALL, PAGE = 100, 8192


def sizes(rec: Recorder) -> list[int]:
    """The sizes of the reads ``dd`` made, in order."""
    return [e["data"]["size"] for e in rec.events("reads") if e["data"]["comm"] == "dd"]


async def reads(containers: Containers, reader: str, rec: Recorder, small: int) -> None:
    """``small`` reads of SMALL bytes, then one of PAGE (always reported): once that one is
    seen, every record of the reads before it has been (the ring buffer keeps their order)."""
    pages = sizes(rec).count(PAGE)
    await containers.exec(
        reader, "dd", "if=/dev/zero", "of=/dev/null", f"bs={SMALL}", f"count={small}"
    )
    await containers.exec(reader, "dd", "if=/dev/zero", "of=/dev/null", f"bs={PAGE}", "count=1")
    await rec.until(lambda: sizes(rec).count(PAGE) > pages, 10, f"a read of {PAGE} bytes")


async def test_a_parameter_set_at_start_and_changed_while_running(
    containers: Containers,
) -> None:
    reader = containers.start("reader", "sleep", "300")
    with trio.fail_after(60):
        async with recorded(
            EXAMPLES / "read_sizes.c",
            select=containers.selection,
            params={"read_sizes:min_size": "4096"},
            iter_interval=3600,
        ) as (eng, rec):
            (loaded,) = eng.gadgets
            assert loaded.params == {"min_size": 4096}
            await reads(containers, reader, rec, 3)
            assert sizes(rec) == [PAGE], rec.events()  # the small reads never left the kernel

            await eng.set_param("read_sizes", "min_size", SMALL // 2)
            await reads(containers, reader, rec, 3)
            assert sizes(rec) == [PAGE, SMALL, SMALL, SMALL, PAGE]

            await eng.set_param("read_sizes", "min_size", "0x100")  # text, as --param takes it
            await reads(containers, reader, rec, 2)
            assert sizes(rec) == [PAGE, SMALL, SMALL, SMALL, PAGE, PAGE]

            with pytest.raises(ParamError, match=r"-1 is out of range for u64"):
                await eng.set_param("read_sizes", "min_size", -1)
            with pytest.raises(
                ParamError, match=r"no parameter 'max_size': read_sizes has min_size"
            ):
                await eng.set_param("read_sizes", "max_size", 1)
            assert loaded.params == {"min_size": 256}
    # No record the gadget wrote was of a read smaller than asked for, runc's included.
    assert all(e["data"]["size"] >= SMALL // 2 for e in rec.events("reads")), rec.events()


async def test_the_default_holds_without_a_value(containers: Containers) -> None:
    reader = containers.start("reader", "sleep", "300")
    with trio.fail_after(60):
        async with recorded(
            EXAMPLES / "read_sizes.c", select=containers.selection, iter_interval=3600
        ) as (eng, rec):
            assert eng.gadgets[0].params == {"min_size": 1}
            await reads(containers, reader, rec, 2)
    assert sizes(rec) == [SMALL, SMALL, PAGE]
