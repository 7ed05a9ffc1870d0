"""bcc's own tools, unchanged, through `engine run` on this kernel (6.18, with Debian's 6.1
headers): their C text is read from the installed /usr/sbin/*-bpfcc scripts at test time,
with the substitutions each makes when run without options (tests/support/bcc_tools.py), and
their records or maps are checked against what the test itself makes happen."""

from __future__ import annotations

import ctypes
import os
import random
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.support import bcc_tools
from tests.support.commands import adocker
from tests.support.docker import Containers
from tests.support.process import EngineProcess, Record, engine_process
from tests.support.requirements import require_root

pytestmark = pytest.mark.integration

# A syscall number no kernel has: only the test makes it, and the kernel's raw syscall
# tracepoints see it like any other (it fails with ENOSYS).
UNUSED_SYSCALL = 1000
CALLS = 3000
CLOSE, SYN_SENT, ESTABLISHED, SYN_RECV = 7, 2, 1, 3
FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK, LISTEN = 4, 5, 8, 9, 10
NET_RX = 3  # the softirq vector


def attached(run: EngineProcess, count: int) -> Callable[[], bool]:
    return lambda: len(run.of_type("attached")) >= count


def _syscalls(number: int, count: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for _ in range(count):
        libc.syscall(number)


def _gadget(tmp_path: Path, tool: bcc_tools.Tool) -> str:
    require_root()
    return str(tool.write(tmp_path))


def _maps(run: EngineProcess, name: str) -> list[Record]:
    return [r for r in run.of_type("map") if r["map"] == name]


# --- exitsnoop: true task_struct layouts (pid, tgid, real_parent->tgid, exit_code) -------

# PID 1 of the container starts a child that says its pid (in the container's pid namespace)
# and exits with 7 once told to.
EXITING = (
    "trap 'exit 0' TERM; "
    "sh -c 'echo $$ > /tmp/child; until [ -e /tmp/exit ]; do sleep 0.05; done; exit 7'; "
    "sleep 600 & wait"
)


def _host_pid(pidns_of: int, inner: int) -> int:
    """The host pid of the process that is ``inner`` in the pid namespace of ``pidns_of``."""
    pidns = os.stat(f"/proc/{pidns_of}/ns/pid").st_ino
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(entry / "ns/pid").st_ino != pidns:
                continue
            status = (entry / "status").read_text()
        except OSError:
            continue
        ids = next(line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:"))
        if int(ids[-1]) == inner:
            return int(ids[0])
    raise AssertionError(f"no process {inner} in the pid namespace of {pidns_of}")


async def _child_of(containers: Containers, name: str) -> int:
    wait = "until [ -s /tmp/child ]; do sleep 0.05; done; cat /tmp/child"
    with trio.fail_after(20):
        return int(await containers.exec(name, "sh", "-c", wait))


async def _exit_in_container(containers: Containers, gadget: str) -> tuple[Record, int, int, str]:
    """exitsnoop's record of a container process that exits with 7, its pid and its
    parent's (host pids, found before it exits), and the container's name."""
    name = await containers.run("exits", "sh", "-c", EXITING)
    parent = await containers.pid(name)
    child = _host_pid(parent, await _child_of(containers, name))

    def exited() -> list[Record]:
        return [e for e in run.events("events") if e["data"]["pid"] == child]

    with trio.fail_after(60):
        async with engine_process(gadget) as run:
            await run.until(attached(run, 1))
            await containers.exec(name, "touch", "/tmp/exit")
            await run.until(exited)
            assert await run.stop() == 0, run.stderr
    (event,) = exited()
    return event, child, parent, name


async def test_exitsnoop_reports_a_container_process_exit(
    containers: Containers, tmp_path: Path
) -> None:
    event, child, parent, _ = await _exit_in_container(
        containers, _gadget(tmp_path, bcc_tools.exitsnoop())
    )
    data = event["data"]
    assert (data["pid"], data["tid"], data["ppid"]) == (child, child, parent)
    assert (data["exit_code"], data["sig_info"], data["task"]) == (7, 0, "sh")
    assert data["start_time"] < data["exit_time"]
    assert event["program"] == "tracepoint__sched__sched_process_exit"


async def test_exitsnoop_names_the_container(containers: Containers, tmp_path: Path) -> None:
    """exitsnoop's record carries no namespace field: its container can only come from the
    record's origin in the kernel, which the engine adds to every record (issue 12)."""
    event, _, _, name = await _exit_in_container(
        containers, _gadget(tmp_path, bcc_tools.exitsnoop())
    )
    assert event["container"] is not None and event["container"]["name"] == name


# --- tcpstates: the tracepoint's fields, a connection's states in order ----------------------


async def test_tcpstates_follows_a_loopback_connection_in_a_container(
    containers: Containers, tmp_path: Path
) -> None:
    gadget = _gadget(tmp_path, bcc_tools.tcpstates())
    name = await containers.run("states")
    port = random.randrange(20000, 30000)

    client_side = [
        (CLOSE, SYN_SENT),
        (SYN_SENT, ESTABLISHED),
        (ESTABLISHED, CLOSE_WAIT),
        (CLOSE_WAIT, LAST_ACK),
        (LAST_ACK, CLOSE),
    ]

    def states(local: int | None, remote: int | None) -> list[tuple[int, int]]:
        # busybox's nc listens on [::]: the server's sockets are IPv6 ones.
        found = [
            e["data"]
            for e in run.events()
            if e["source"] in ("ipv4_events", "ipv6_events")
            and (local is None or e["data"]["ports"] >> 16 == local)
            and (remote is None or e["data"]["ports"] & 0xFFFF == remote)
        ]
        # Each CPU has its own perf buffer: order by the tool's own timestamps.
        return [(d["oldstate"], d["newstate"]) for d in sorted(found, key=lambda d: d["ts_us"])]

    with trio.fail_after(60):
        async with engine_process(gadget) as run:
            await run.until(attached(run, 1))
            # The server closes first (nc -e true); the client keeps its input open until
            # then. It connects once the tool has seen the server listen (a fixed pause lost
            # that race on a loaded machine: the connection was refused).
            await adocker("exec", "-d", name, "nc", "-l", "-p", str(port), "-e", "true")
            await run.until(lambda: (CLOSE, LISTEN) in states(port, 0))
            await containers.exec(name, "sh", "-c", f"sleep 2 | nc 127.0.0.1 {port}")
            # Every transition, not only the last: the connect's records may be read after
            # the close's, from another CPU's buffer.
            await run.until(lambda: set(states(None, port)) >= set(client_side))
            assert await run.stop() == 0, run.stderr
    assert states(None, port) == client_side
    # The client's port is chosen after its SYN_SENT (that event says 0).
    (client_port,) = {
        e["data"]["ports"] >> 16
        for e in run.events("ipv4_events")
        if e["data"]["ports"] & 0xFFFF == port
    } - {0}
    assert states(port, client_port) == [
        (LISTEN, SYN_RECV),
        (SYN_RECV, ESTABLISHED),
        (ESTABLISHED, FIN_WAIT1),
        (FIN_WAIT1, FIN_WAIT2),
        (FIN_WAIT2, CLOSE),
    ]
    assert states(port, 0) == [(CLOSE, LISTEN), (LISTEN, CLOSE)]
    assert {
        (e["data"]["saddr"], e["data"]["daddr"])
        for e in run.events("ipv4_events")
        if e["data"]["ports"] & 0xFFFF == port
    } == {("127.0.0.1", "127.0.0.1")}


# --- tcplife: true sock and tcp_sock layouts (bytes_received, bytes_acked) --------------------


def _exchange(sent: int, answered: int) -> tuple[int, int]:
    """A loopback connection: the client sends ``sent`` bytes, the server ``answered``; the
    ports of the server and the client."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        with client, accepted:
            client.sendall(b"x" * sent)
            got = 0
            while got < sent:
                got += len(accepted.recv(65536))
            accepted.sendall(b"y" * answered)
            got = 0
            while got < answered:
                got += len(client.recv(65536))
            ports = server.getsockname()[1], client.getsockname()[1]
            client.shutdown(socket.SHUT_WR)
            accepted.recv(1)
    return ports


async def test_tcplife_counts_the_bytes_of_a_connection(tmp_path: Path) -> None:
    gadget = _gadget(tmp_path, bcc_tools.tcplife())

    def lives(local: int) -> list[dict[str, Any]]:
        return [e["data"] for e in run.events("ipv4_events") if e["data"]["ports"] >> 32 == local]

    with trio.fail_after(60):
        async with engine_process(gadget) as run:
            await run.until(attached(run, 1))
            server, client = await trio.to_thread.run_sync(_exchange, 100_000, 5_000)
            await run.until(lambda: lives(client) and lives(server))
            assert await run.stop() == 0, run.stderr
    (outgoing,) = lives(client)
    (incoming,) = lives(server)
    assert outgoing["ports"] & 0xFFFFFFFF == server
    # tcp_sock's byte counters count the FIN (and bytes_acked the SYN) too.
    assert 100_000 <= outgoing["tx_b"] <= 100_002 and 5_000 <= outgoing["rx_b"] <= 5_001
    assert 5_000 <= incoming["tx_b"] <= 5_002 and 100_000 <= incoming["rx_b"] <= 100_001
    assert outgoing["pid"] == os.getpid() and outgoing["task"]


# --- syscount: a hash map, emitted at stop, or every interval and cleared ----------------------


async def test_syscount_counts_the_syscalls_the_test_makes(tmp_path: Path) -> None:
    gadget = _gadget(tmp_path, bcc_tools.syscount())
    with trio.fail_after(60):
        async with engine_process(gadget) as run:
            await run.until(attached(run, 1))
            await trio.to_thread.run_sync(_syscalls, UNUSED_SYSCALL, CALLS)
            assert await run.stop() == 0, run.stderr
    skipped = run.of_type("program_skipped")
    assert [r["program"] for r in skipped] == ["tracepoint__raw_syscalls__sys_enter"]
    (snapshot,) = _maps(run, "data")
    assert snapshot["kind"] == "hash"
    counts = {e["key"]: e["value"] for e in snapshot["entries"]}
    assert counts[UNUSED_SYSCALL] == CALLS


async def test_syscount_maps_every_interval_cleared(tmp_path: Path) -> None:
    gadget = _gadget(tmp_path, bcc_tools.syscount())

    def ours() -> list[int]:
        return [
            e["value"]
            for r in _maps(run, "data")
            for e in r["entries"]
            if e["key"] == UNUSED_SYSCALL
        ]

    with trio.fail_after(60):
        async with engine_process(gadget, "--maps", "0.3", "--maps-clear") as run:
            await run.until(attached(run, 1))
            await trio.to_thread.run_sync(_syscalls, UNUSED_SYSCALL, CALLS)
            await run.until(lambda: sum(ours()) >= CALLS)
            await trio.to_thread.run_sync(_syscalls, UNUSED_SYSCALL, 7)
            await run.until(lambda: sum(ours()) >= CALLS + 7)
            assert await run.stop() == 0, run.stderr
    # Each interval holds its own calls; together, every call once.
    assert sum(ours()) == CALLS + 7
    assert len(_maps(run, "data")) >= 3


# --- runqlat and softirqs: histograms ------------------------------------------------------------


def _sleeps(count: int) -> None:
    for _ in range(count):
        time.sleep(0.001)


async def test_runqlat_histogram_counts_the_wakeups(tmp_path: Path) -> None:
    gadget = _gadget(tmp_path, bcc_tools.runqlat())
    wakeups = 200
    with trio.fail_after(60):
        async with engine_process(gadget) as run:
            await run.until(attached(run, 3))
            await trio.to_thread.run_sync(_sleeps, wakeups)
            assert await run.stop() == 0, run.stderr
    (dist,) = _maps(run, "dist")
    assert dist["kind"] == "log2_histogram"
    (section,) = dist["entries"]
    assert section["key"] is None
    buckets = section["value"]
    # Every sleep of the test ended in a wakeup that was measured (and others' too).
    assert sum(b["count"] for b in buckets) >= wakeups
    assert [(b["low"], b["high"]) for b in buckets[:3]] == [(0, 1), (2, 3), (4, 7)]
    assert buckets[-1]["count"] > 0


async def test_softirqs_totals_per_vector(tmp_path: Path) -> None:
    gadget = _gadget(tmp_path, bcc_tools.softirqs())
    with trio.fail_after(60):
        async with engine_process(gadget) as run:
            await run.until(attached(run, 2))
            # Loopback traffic is received in the NET_RX softirq.
            await trio.to_thread.run_sync(_exchange, 1_000_000, 1_000)
            assert await run.stop() == 0, run.stderr
    (dist,) = _maps(run, "dist")
    assert dist["kind"] == "log2_histogram"
    totals = {s["key"]["vec"]: sum(b["count"] for b in s["value"]) for s in dist["entries"]}
    assert totals[NET_RX] > 0
    assert set(totals) <= set(range(10))
