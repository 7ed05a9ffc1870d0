"""Shared by the static-program tests on the host and in the VM: leftovers and event waits."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from engine.bcc.loader import LoadedGadget
from engine.engine import Engine

TRACEFS = Path("/sys/kernel/tracing")


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _bpftool(what: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["bpftool", "-j", what, "show"], capture_output=True, text=True, check=True
    ).stdout
    return list(json.loads(out or "[]"))


@attrs.frozen
class Attached:
    """What the kernel holds before a test: its tracefs probe events and program ids."""

    kprobe_events: str
    uprobe_events: str
    programs: frozenset[int]

    @classmethod
    def now(cls) -> Attached:
        programs = frozenset(p["id"] for p in _bpftool("prog"))
        return cls(_read(TRACEFS / "kprobe_events"), _read(TRACEFS / "uprobe_events"), programs)


def program_ids(loaded: Sequence[LoadedGadget]) -> frozenset[int]:
    """The kernel ids of the programs loaded (read from our own fds' fdinfo)."""
    ids = set()
    for gadget in loaded:
        for program in gadget.programs.values():
            info = Path(f"/proc/self/fdinfo/{program.fd}").read_text()
            (line,) = [x for x in info.splitlines() if x.startswith("prog_id:")]
            ids.add(int(line.split()[1]))
    return frozenset(ids)


async def assert_nothing_left(before: Attached, ours: frozenset[int]) -> None:
    """No probe event of ours in tracefs, none of our programs loaded (so no link either:
    a link or an attached perf event holds its program)."""
    assert ours, "the test saw no programs of its own"
    # The kernel frees a closed program after an RCU grace period: give it a moment.
    for _ in range(30):
        left = ours & Attached.now().programs
        if not left:
            break
        await trio.sleep(0.1)
    assert left == frozenset(), f"programs still loaded: {sorted(left)}"
    after = Attached.now()
    assert after.kprobe_events == before.kprobe_events
    assert after.uprobe_events == before.uprobe_events


async def collect_until(
    engine: Engine, done: Callable[[list[dict[str, Any]]], bool], seconds: float
) -> list[dict[str, Any]]:
    """Every record (as JSON) until ``done`` says enough or ``seconds`` have passed.

    The caller's assertions then say what is missing, rather than a bare timeout.
    """
    seen: list[dict[str, Any]] = []
    with trio.move_on_after(seconds):
        async for record in engine.events():
            seen.append(record.to_json())
            if done(seen):
                break
    return seen


def events(seen: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    return [r["data"] for r in seen if r["type"] == "event" and r["source"] == source]
