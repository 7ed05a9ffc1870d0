"""Test containers of the local image: named per test, always removed after it."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Sequence
from pathlib import Path

import attrs
import trio

from tests.support.commands import adocker, docker, run
from tests.support.constants import ROOT, TEST_IMAGE

# PID 1 of a container ignores SIGTERM unless it handles it: handle it, so that `docker stop`
# and a stopping daemon do not wait 10 s before killing.
SLEEPER = ("sh", "-c", "trap 'exit 0' TERM; sleep 600 & wait")


@attrs.define
class Containers:
    """Containers named ``engine-test-<tag>-<role>``, the tag unique to one test."""

    tag: str = attrs.Factory(lambda: uuid.uuid4().hex[:8])

    @property
    def prefix(self) -> str:
        return f"engine-test-{self.tag}-"

    def name(self, role: str) -> str:
        return self.prefix + role

    @property
    def selection(self) -> list[str]:
        """A selection of this test's containers, and of no one else's."""
        return [f"name={self.prefix}*"]

    def start(
        self, role: str, *command: str, options: Sequence[str] = (), check: bool = True
    ) -> str:
        """``docker run -d`` (``command`` defaults to a sleeper that stops at once); the
        container's name."""
        name = self.name(role)
        argv = ("run", "-d", "--name", name, *options, TEST_IMAGE, *(command or SLEEPER))
        docker(*argv, check=check)
        return name

    async def run(
        self, role: str, *command: str, options: Sequence[str] = (), check: bool = True
    ) -> str:
        """``start`` in a worker thread."""
        return await trio.to_thread.run_sync(
            lambda: self.start(role, *command, options=options, check=check)
        )

    async def remove(self, name: str) -> None:
        await adocker("rm", "-f", name)

    async def exec(self, name: str, *command: str, check: bool = True) -> str:
        return await adocker("exec", name, *command, check=check)

    async def inspect(self, name: str, template: str) -> str:
        return await adocker("inspect", "-f", template, name)

    async def address(self, name: str) -> str:
        return await self.inspect(name, "{{.NetworkSettings.IPAddress}}")

    async def pid(self, name: str) -> int:
        return int(await self.inspect(name, "{{.State.Pid}}"))

    async def netns(self, name: str) -> int:
        """The inode of the container's netns."""
        return os.stat(f"/proc/{await self.pid(name)}/ns/net").st_ino

    def left(self) -> list[str]:
        """This test's containers that still exist (by the prefix: renamed ones too)."""
        return docker("ps", "-aq", "--filter", f"name={self.prefix}", check=False).split()

    def remove_all(self) -> None:
        # A busy daemon sometimes fails a removal: try again, then complain.
        for _ in range(3):
            left = self.left()
            if not left:
                return
            docker("rm", "-f", *left, check=False)
        assert self.left() == [], f"containers of {self.prefix}* could not be removed"


DOCKER_PIDFILE = Path("/var/run/docker.pid")


async def stop_dockerd(signum: int = signal.SIGTERM) -> None:
    """Signal the daemon and wait until it has exited."""
    pid = int((await trio.Path(DOCKER_PIDFILE).read_text()).strip())
    pidfd = os.pidfd_open(pid)  # readable once the process has exited
    try:
        os.kill(pid, signum)
        with trio.fail_after(60):
            await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)


def start_dockerd() -> None:
    """Start the daemon unless one answers (scripts/start-docker)."""
    run(str(ROOT / "scripts" / "start-docker"))
