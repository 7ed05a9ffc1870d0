"""A hook file that prints each event it is given, for tests to check what reached hooks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.process import EngineProcess

SEEN_HOOK = """\
import json
import sys


async def on_event(event):
    name = event.container["name"] if event.container else None
    print("hooked:", json.dumps([event.gadget, event.source, name, event.data]), file=sys.stderr)
"""


def seen_hook(folder: Path) -> str:
    """The hook file, written in ``folder``; its path."""
    path = folder / "seen_hook.py"
    path.write_text(SEEN_HOOK)
    return str(path)


def hooked(run: EngineProcess) -> list[list[Any]]:
    """What the hook was given so far: ``[gadget, source, container name, data]`` each."""
    return [json.loads(line.removeprefix("hooked: ")) for line in run.lines("^hooked: ")]
