"""Commands run for a test: their output, or a failure naming the command and its stderr."""

from __future__ import annotations

import socket
import subprocess

import trio


def run(*argv: str, check: bool = True) -> str:
    """``argv``'s stdout, stripped; with ``check``, a non-zero exit fails the test."""
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout.strip()


async def arun(*argv: str, check: bool = True) -> str:
    """``run`` in a worker thread."""
    return await trio.to_thread.run_sync(lambda: run(*argv, check=check))


def docker(*args: str, check: bool = True) -> str:
    return run("docker", *args, check=check)


async def adocker(*args: str, check: bool = True) -> str:
    return await arun("docker", *args, check=check)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
