"""What the faults suite checks is left behind: tc filters, BPF programs, tracefs probes, fds;
and small helpers to make containers, named netns and engine processes for it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from tests.conftest import ROOT, TEST_IMAGE

TRACEFS = Path("/sys/kernel/tracing")


def tag() -> str:
    return uuid.uuid4().hex[:6]


def run(*argv: str, check: bool = True) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout.strip()


async def arun(*argv: str, check: bool = True) -> str:
    return await trio.to_thread.run_sync(lambda: run(*argv, check=check))


def tc_filters() -> list[str]:
    """Every tc filter line on every interface's clsact hooks, prefixed with the interface."""
    lines = []
    for dev in sorted(os.listdir("/sys/class/net")):
        for hook in ("ingress", "egress"):
            out = run("tc", "filter", "show", "dev", dev, hook, check=False)
            lines += [f"{dev} {hook}: {line}" for line in out.splitlines() if "filter" in line]
    return lines


def filters_of(pid: int) -> list[str]:
    """The filters an engine process with this pid added (named engine_<pid>.<start>_...)."""
    return [line for line in tc_filters() if f"engine_{pid}." in line]


def bpf_programs() -> dict[int, str]:
    """Loaded BPF programs: id -> name."""
    out = run("bpftool", "prog", "show", "-j")
    return {p["id"]: p.get("name", "") for p in json.loads(out or "[]")}


def bpf_links() -> set[int]:
    out = run("bpftool", "link", "show", "-j")
    return {link["id"] for link in json.loads(out or "[]")}


def tracefs_probes(marker: str) -> list[str]:
    """kprobe/uprobe definitions whose name holds ``marker`` (bcc names them ..._bcc_<pid>)."""
    lines = []
    for name in ("kprobe_events", "uprobe_events"):
        path = TRACEFS / name
        if path.exists():
            lines += [line for line in path.read_text().splitlines() if marker in line]
    return lines


def open_fds(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _socket_families(pid: int | str) -> dict[str, str]:
    """Socket inode -> the /proc/net table it is listed in (packet, netlink, unix...)."""
    families = {}
    for table in ("packet", "netlink", "unix", "tcp", "tcp6", "udp", "udp6", "raw"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        column = {"packet": 8, "netlink": 9, "unix": 6}.get(table, 9)
        for line in lines:
            fields = line.split()
            if len(fields) > column:
                families[fields[column]] = table
    return families


def fd_targets(pid: int | str = "self") -> list[str]:
    """What each open fd refers to, sorted; sockets by kind only (a connection that a pool
    replaced is no leak)."""
    targets = []
    families = _socket_families(pid)
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            target = f"socket ({families.get(target[8:-1], 'other')})"
        targets.append(target)
    return sorted(targets)


def rss_kib(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def renamed_gadget(source: Path, folder: Path, names: dict[str, str]) -> Path:
    """A copy of an example gadget with its functions renamed, so that its programs are told
    apart from other engines' (bpftool shows names cut to 15 characters)."""
    text = source.read_text()
    for old, new in names.items():
        assert len(new) <= 15, new
        text = re.sub(rf"\b{old}\b", new, text)
    path = folder / source.name
    path.write_text(text)
    return path


@attrs.define
class NamedNetns:
    """A netns made with `ip netns add`, with a veth whose other end stays in the host."""

    name: str
    host_if: str
    inner_if: str

    @classmethod
    def named(cls) -> NamedNetns:
        """Names only: ``create()`` makes it."""
        t = tag()
        return cls(f"engine-test-{t}", f"eth{t}", f"ein{t}")

    @classmethod
    def make(cls) -> NamedNetns:
        made = cls.named()
        made.create()
        return made

    @property
    def staging(self) -> str:
        return f"/tmp/{self.name}.net"

    def create(self) -> None:
        """Built complete out of sight, then published in /run/netns in one bind mount, so
        that whoever watches /run/netns never sees it half made."""
        run("touch", self.staging)
        run("unshare", f"--net={self.staging}", "true")
        run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.inner_if)
        # A netns given as a path (it holds a "/") is opened as such by iproute2.
        run("ip", "link", "set", self.inner_if, "netns", self.staging)
        run("nsenter", f"--net={self.staging}", "ip", "link", "set", self.inner_if, "up")
        run("ip", "link", "set", self.host_if, "up")
        os.makedirs("/run/netns", exist_ok=True)
        run("touch", f"/run/netns/{self.name}")
        run("mount", "--bind", self.staging, f"/run/netns/{self.name}")

    @property
    def inode(self) -> int:
        # The staging mount outlives `ip netns del`, so the inode can still be read then.
        return os.stat(self.staging).st_ino

    def remove(self) -> None:
        run("ip", "link", "del", self.host_if, check=False)
        run("ip", "netns", "del", self.name, check=False)
        run("umount", self.staging, check=False)
        run("rm", "-f", self.staging, check=False)


def container_name(role: str) -> str:
    return f"engine-test-{tag()}-{role}"


def start_container(name: str, *extra: str) -> None:
    run("docker", "run", "-d", "--name", name, *extra, TEST_IMAGE, "sleep", "600")


def remove_containers(names: list[str]) -> None:
    if names:
        run("docker", "rm", "-f", *names, check=False)


ENGINE = [sys.executable, "-m", "engine"]


@attrs.define
class EngineProcess:
    """`python -m engine run ...` with its JSON records and stderr lines collected.

    Gadget events are only counted: a flood of them must not make the test the bottleneck.
    """

    process: trio.Process
    records: list[dict[str, Any]] = attrs.Factory(list)
    events: int = 0
    stderr: list[str] = attrs.Factory(list)
    _changed: trio.Event = attrs.Factory(trio.Event)

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    async def _collect(self, stream: trio.abc.ReceiveStream, into_records: bool) -> None:
        buffer = b""
        async for chunk in stream:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if into_records and line.startswith(b'{"type": "event"'):
                    self.events += 1
                elif into_records:
                    self.records.append(json.loads(line))
                else:
                    self.stderr.append(line.decode(errors="replace"))
            self._changed.set()
            self._changed = trio.Event()
        self._changed.set()

    async def wait_until(self, ready: Any) -> None:
        """Until ``ready(self)`` is true (re-checked whenever output arrives)."""
        while not ready(self):
            if self.process.returncode is not None:
                raise AssertionError(f"engine exited {self.process.returncode}: {self.stderr}")
            with trio.move_on_after(0.5):
                await self._changed.wait()

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("type") == kind]


@asynccontextmanager
async def engine_process(*args: str) -> AsyncIterator[EngineProcess]:
    """The engine as a subprocess; killed (SIGKILL) if still running when the block ends."""
    async with trio.open_nursery() as nursery:
        process = await trio.lowlevel.open_process(
            [*ENGINE, "run", "--output", "json", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
        running = EngineProcess(process)
        assert process.stdout is not None and process.stderr is not None
        nursery.start_soon(running._collect, process.stdout, True)
        nursery.start_soon(running._collect, process.stderr, False)
        try:
            yield running
        finally:
            if process.returncode is None:
                process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


COMM = "engflood"
FLOOD = r"""
struct call { u64 n; };

BPF_RINGBUF_OUTPUT(calls, 4);

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
    char comm[16];
    bpf_get_current_comm(&comm, sizeof(comm));
    if (comm[0] != 'e' || comm[1] != 'n' || comm[2] != 'g' || comm[3] != 'f' ||
        comm[4] != 'l' || comm[5] != 'o' || comm[6] != 'o' || comm[7] != 'd')
        return 0;
    struct call c = {.n = bpf_ktime_get_ns()};
    calls.ringbuf_output(&c, sizeof(c), 0);
    return 0;
}
"""
# Names itself so that the gadget sees only it, then calls getppid() until killed.
HAMMER = f"""
import ctypes, os
ctypes.CDLL(None).prctl(15, b"{COMM}", 0, 0, 0)
while True:
    os.getppid()
"""


@asynccontextmanager
async def hammer() -> AsyncIterator[None]:
    """A process calling getppid() flat out, named so that only FLOOD sees it."""
    process = await trio.lowlevel.open_process([sys.executable, "-c", HAMMER])
    try:
        yield
    finally:
        process.kill()
        await process.wait()


def own_bpf_objects(pid: int | str = "self") -> dict[str, set[int]]:
    """The BPF programs, maps and links that a process holds fds on, by kind: read from
    fdinfo, so that other processes' objects (other tests, other tools) do not count."""
    found: dict[str, set[int]] = {"prog_id": set(), "map_id": set(), "link_id": set()}
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue  # closed meanwhile
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key in found:
                found[key].add(int(value))
    return found
