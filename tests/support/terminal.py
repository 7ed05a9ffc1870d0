"""``engine run`` on a real pseudo-terminal of a given size: what it drew, frame by frame."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import termios
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

from tests.support.process import EngineProcess, engine_process

_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@attrs.define
class Terminal:
    """Everything the engine wrote to the terminal."""

    output: bytearray = attrs.Factory(bytearray)

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")

    def last_frame(self) -> list[str]:
        """The lines of the last frame drawn (cursor home), without escape sequences."""
        frame = self.text.rsplit("\x1b[H", 1)[-1]
        return [_ESCAPE.sub("", line).rstrip("\r") for line in frame.split("\n")]


@asynccontextmanager
async def on_terminal(
    columns: int, rows: int, *args: str
) -> AsyncIterator[tuple[EngineProcess, Terminal]]:
    """``engine run *args`` with stdout on a pty of ``columns`` x ``rows``, read until the
    engine closes it."""
    main_fd, child_fd = pty.openpty()
    fcntl.ioctl(child_fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    terminal = Terminal()

    def read_terminal() -> None:
        while True:
            try:
                chunk = os.read(main_fd, 65536)
            except OSError:  # EIO: every writer of the terminal is gone
                return
            if not chunk:
                return
            terminal.output.extend(chunk)

    try:
        async with (
            trio.open_nursery() as nursery,
            engine_process(*args, stdout=child_fd) as engine,
        ):
            os.close(child_fd)
            child_fd = -1
            nursery.start_soon(trio.to_thread.run_sync, read_terminal)
            yield engine, terminal
    finally:
        if child_fd >= 0:
            os.close(child_fd)
        os.close(main_fd)
