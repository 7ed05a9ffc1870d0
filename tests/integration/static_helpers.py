"""Shared by the static-program tests on the host and in the VM: event waits. What is left
behind is checked after every test (tests/support/leaks.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from engine.engine import Engine


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
