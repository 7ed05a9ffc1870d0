"""Inside the Debian 6.1 VM: kprobe, kretprobe, fentry, fexit and lsm see real events.

This machine's kernel refuses these kinds (test_static_programs.py asserts how it says so);
tests/vm/test_debian_kernel.py runs this file in the VM. One engine with the three example
gadgets keeps the number of compiles (slow under emulation) at three.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Any

import pytest
import trio

from engine.engine import open_engine
from engine.errors import TargetNotFoundError
from engine.gadget.model import Gadget
from tests.integration.static_helpers import collect_until, events
from tests.support.constants import EXAMPLES

pytestmark = [pytest.mark.integration, pytest.mark.vmkernel]

VM_EXAMPLES = ["opensnoop_kprobe.c", "unlink_fentry.c", "lsm_file_open.c"]


def _touch_and_unlink(path: Path) -> None:
    with path.open("w") as f:
        f.write("x")
    path.unlink()
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


async def test_kprobes_trampolines_and_lsm_see_real_events(root: None, tmp_path: Path) -> None:
    gadgets = [Gadget.from_file(EXAMPLES / name) for name in VM_EXAMPLES]
    me = os.getpid()
    path = tmp_path / f"engine-vm-{me}.txt"
    with trio.fail_after(400):
        async with open_engine(*gadgets, containers=False) as engine:
            await trio.to_thread.run_sync(_touch_and_unlink, path)

            def done(seen: list[dict[str, Any]]) -> bool:
                return (
                    any(e["filename"] == str(path) for e in events(seen, "opens"))
                    and any(e["name"] == path.name for e in events(seen, "opened"))
                    and sum(r["filename"] == str(path) for r in events(seen, "results")) >= 2
                    and sum(e["filename"] == str(path) for e in events(seen, "unlinks")) >= 2
                )

            seen = await collect_until(engine, done, 60)

    attached = {(r["program"], r["kind"]) for r in seen if r["type"] == "attached"}
    assert attached == {
        ("open_entry", "kprobe"),
        ("open_return", "kretprobe"),
        ("unlink_entry", "fentry"),
        ("unlink_exit", "fexit"),
        ("check_file_open", "lsm"),
    }
    # kprobe + kretprobe on do_sys_openat2: the file this test created, with a real fd.
    (opened,) = [e for e in events(seen, "opens") if e["filename"] == str(path)]
    assert opened["pid"] == me
    assert opened["ret"] >= 0
    # lsm/file_open saw the same open.
    lsm = [e for e in events(seen, "opened") if e["name"] == path.name]
    assert lsm and all(e["pid"] == me for e in lsm)
    # fentry/fexit on do_unlinkat: two unlinks, the first removed the file, the second failed.
    entries = [e for e in events(seen, "unlinks") if e["filename"] == str(path)]
    assert [e["pid"] for e in entries] == [me, me]
    results = [r["ret"] for r in events(seen, "results") if r["filename"] == str(path)]
    assert results == [0, -errno.ENOENT]


async def test_missing_kernel_function_is_one_clear_error(root: None) -> None:
    for section in ("kprobe", "kretprobe", "fentry", "fexit"):
        gadget = Gadget.from_source(
            f'SEC("{section}/no_such_function_here")\nint prog(u64 *ctx) {{ return 0; }}\n'
        )
        with trio.fail_after(30), pytest.raises(TargetNotFoundError) as raised:
            async with open_engine(gadget, containers=False):
                pytest.fail("attached to a function that does not exist")
        assert "no kernel function 'no_such_function_here'" in str(raised.value)
