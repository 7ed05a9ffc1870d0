"""Test containers of the local image: named per test, always removed after it."""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import time
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
# Docker's containerd runs one shim per container: `containerd-shim-runc-v2 -namespace moby
# -id <container id> ...`, the container's processes its children.
SHIM = re.compile(rb"containerd-shim-runc-v2\0(?:.*\0)?-namespace\0moby\0-id\0([0-9a-f]{64})\0")


def _shims() -> dict[str, int]:
    """Every shim of Docker's containerd: container id -> shim pid."""
    found: dict[str, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            match = SHIM.search(cmdline)
            if match is not None:
                found[match[1].decode()] = int(entry)
    return found


def orphan_shims() -> dict[str, int]:
    """The shims of containers the daemon does not know: a daemon killed (SIGKILL) while it
    was making a container leaves it half-made, its shim and its `runc init` (which waits
    for ever for a start that never comes) alive, with a netns and a port on docker0 that no
    daemon will ever report or remove. A container the daemon is making now is known to it
    (`docker create` comes before its shim), so listing the daemon's after the shims cannot
    take one for an orphan."""
    shims = _shims()
    known = set(docker("ps", "-aq", "--no-trunc", check=True).split())
    return {cid: pid for cid, pid in shims.items() if cid not in known}


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                text = Path(f"/proc/{pid}/task/{task}/children").read_text()
                kids += [int(k) for k in text.split()]
    return kids


def remove_orphans(ids: set[str]) -> None:
    """Kill what is left of those orphan containers (``orphan_shims``): each shim's processes,
    then the shim, and wait until they have exited. The netns goes with its last process, its
    veth with it (containerd's record of the container stays: it holds nothing)."""
    for cid, shim in orphan_shims().items():
        if cid not in ids:
            continue
        pidfds = []
        try:
            for pid in (*_children(shim), shim):
                with contextlib.suppress(ProcessLookupError):
                    pidfds.append(os.pidfd_open(pid))
            for pidfd in pidfds:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            # Each pidfd is readable once its process has exited.
            deadline = time.monotonic() + 10
            for pidfd in pidfds:
                ready, _, _ = select.select([pidfd], [], [], max(0, deadline - time.monotonic()))
                assert ready, f"orphan container {cid}: its processes did not exit"
        finally:
            for pidfd in pidfds:
                os.close(pidfd)


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
