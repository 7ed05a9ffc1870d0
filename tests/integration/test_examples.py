"""Every example as its top comment says to run it: `engine run examples/NAME.c --hook
examples/NAME_hook.py`, in a subprocess, against real containers. Traffic goes only between
test containers and to the docker bridge; the assertions are on the JSON records (names,
addresses, ports, counts) and on what the hook script printed."""

from __future__ import annotations

import re
import socket
import sys
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
import trio

from tests.support.constants import BRIDGE, EXAMPLES
from tests.support.docker import Containers
from tests.support.process import EngineProcess, engine_process

pytestmark = [pytest.mark.integration, pytest.mark.docker]


def http_get(ip: str, port: int = 8080) -> str:
    """A shell command fetching / over TCP with nc (busybox's wget crashes in this image)."""
    return f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} {port} >/dev/null"


def example(
    gadget: str, hook: str, *args: str, env: dict[str, str] | None = None
) -> AbstractAsyncContextManager[EngineProcess]:
    """``engine run examples/GADGET --hook examples/HOOK ...``, as its top comment says."""
    return engine_process(str(EXAMPLES / gadget), "--hook", str(EXAMPLES / hook), *args, env=env)


def selecting(containers: Containers) -> list[str]:
    """The options that select this test's containers."""
    return ["--select", *containers.selection]


def periodic(name: str, containers: Containers) -> AbstractAsyncContextManager[EngineProcess]:
    """Example ``name`` with its hook, on this test's containers, its table every 0.5 s."""
    interval = {f"{name.upper()}_INTERVAL": "0.5"}
    return example(f"{name}.c", f"{name}_hook.py", *selecting(containers), env=interval)


def attached(run: EngineProcess, program: str, container: str | None = None) -> Callable[[], bool]:
    """``program`` is attached (in ``container``'s netns when given)."""

    def found() -> bool:
        return any(
            r["program"] == program and (container is None or r["container"] == container)
            for r in run.of_type("attached")
        )

    return found


async def test_execsnoop_counts_execs_per_container(containers: Containers) -> None:
    busy = containers.start("busy", "sleep", "300")
    quiet = containers.start("quiet", "sleep", "300")
    with trio.fail_after(30):
        async with periodic("execsnoop", containers) as run:
            await run.until(attached(run, "trace_execve"))
            for _ in range(3):
                await containers.exec(busy, "/bin/true")
            await containers.exec(quiet, "/bin/true")
            await run.until(lambda: run.lines(rf"\b{busy}=\d+"))
            assert await run.stop() == 0, run.stderr
    true_execs = [e for e in run.events("events") if e["data"]["filename"] == "/bin/true"]
    assert sorted(e["container"]["name"] for e in true_execs) == [busy] * 3 + [quiet]
    # The last line is the final summary: the hook counted exactly the events the engine wrote.
    per_name: dict[str, int] = {}
    for e in run.events("events"):
        per_name[e["container"]["name"]] = per_name.get(e["container"]["name"], 0) + 1
    final = run.lines(r"^execsnoop: ")[-1]
    assert final == "execsnoop: " + " ".join(
        f"{name}={n}" for name, n in sorted(per_name.items(), key=lambda kv: -kv[1])
    )
    assert per_name[busy] >= 3 and "(host)" not in final


async def test_tcpconnect_reports_connections_of_the_selected_container(
    containers: Containers,
) -> None:
    server = containers.start("server", "httpd", "-f", "-p", "8080")
    client = containers.start("client", "sleep", "300")
    server_ip, client_ip = await containers.address(server), await containers.address(client)
    with trio.fail_after(30):
        async with example(
            "tcpconnect.c", "tcpconnect_hook.py", "--select", f"name={client}"
        ) as run:
            await run.until(attached(run, "tcp_state"))
            for _ in range(2):
                await containers.exec(client, "sh", "-c", http_get(server_ip))
            # Nothing listens on the bridge's port 1: refused.
            await containers.exec(client, "nc", "-w", "1", BRIDGE, "1", check=False)
            # The server is not selected: its connection is dropped in the kernel.
            await containers.exec(server, "sh", "-c", http_get(server_ip))
            await run.until(lambda: len(run.events("connections")) >= 3)
            assert await run.stop() == 0, run.stderr
    events = [e for e in run.events("connections")]
    assert {e["container"]["name"] for e in events} == {client}, events
    established = [e["data"] for e in events if e["data"]["result"] == "established"]
    assert len(established) == 2, events
    for data in established:
        assert (data["comm"], data["family"], data["saddr"], data["daddr"], data["dport"]) == (
            "nc",
            2,
            client_ip,
            server_ip,
            8080,
        )
        assert 1024 <= data["sport"] <= 65535 and 0 < data["latency_ns"] < 2_000_000_000
    assert established[0]["sport"] != established[1]["sport"]
    [failed] = [e["data"] for e in events if e["data"]["result"] == "failed"]
    assert (failed["comm"], failed["daddr"], failed["dport"]) == ("nc", BRIDGE, 1)
    final = run.lines(r"^tcpconnect: ")[-2:]
    assert re.fullmatch(
        rf"tcpconnect: {client} -> {re.escape(BRIDGE)}:1 established=0 failed=1 avg=\d+\.\d\dms",
        final[0],
    ), final
    assert re.fullmatch(
        rf"tcpconnect: {client} -> {re.escape(server_ip)}:8080 established=2 failed=0"
        r" avg=\d+\.\d\dms",
        final[1],
    ), final


async def test_first_connection_of_each_new_container(containers: Containers) -> None:
    server = containers.start("server", "httpd", "-f", "-p", "8080")
    server_ip = await containers.address(server)
    fetch = http_get(server_ip)
    with trio.fail_after(40):
        async with example(
            "tcpconnect.c", "tcpconnect_first_hook.py", *selecting(containers)
        ) as run:
            await run.until(attached(run, "tcp_state"))
            # Started while the engine runs; each connects a second later, twice.
            web = containers.name("web")
            refused = containers.name("refused")
            await containers.run("web", "sh", "-c", f"sleep 1; {fetch}; {fetch}; sleep 300")
            await containers.run("refused", "sh", "-c", f"sleep 1; nc -w 1 {BRIDGE} 1; sleep 300")
            silent = await containers.run("silent")
            await run.until(lambda: len(run.lines(r"^first-connect: ")) >= 2)
            await containers.remove(silent)
            await run.until(lambda: run.lines(rf"^first-connect: {silent} "))
            await run.until(lambda: [e for e in run.events() if e["container"]["name"] == web][1:])
            assert await run.stop() == 0, run.stderr
    lines = run.lines(r"^first-connect: ")
    assert len(lines) == 3, lines
    [web_line] = [line for line in lines if line.startswith(f"first-connect: {web} ")]
    assert re.fullmatch(
        rf"first-connect: {web} \(engine-test:latest\) nc -> {re.escape(server_ip)}:8080"
        r" established \d+\.\d\ds after start",
        web_line,
    )
    [refused_line] = [line for line in lines if line.startswith(f"first-connect: {refused} ")]
    assert f"nc -> {BRIDGE}:1 failed" in refused_line
    [silent_line] = [line for line in lines if line.startswith(f"first-connect: {silent} ")]
    assert re.fullmatch(
        rf"first-connect: {silent} \(engine-test:latest\) stopped after \d+\.\d\ds"
        " without connecting",
        silent_line,
    )
    # The engine saw both of web's connections; the hook reported only the first.
    assert len([e for e in run.events() if e["container"]["name"] == web]) == 2
    # The server was running before the engine and made no connection: nothing about it.
    assert not [line for line in lines if server in line]


async def test_dns_queries_named_by_their_containers(containers: Containers) -> None:
    # Nothing answers on the server: its netns still sees the query arrive (then refuses it).
    server = containers.start("server", "sleep", "300")
    client = containers.start("client", "sleep", "300")
    server_ip, client_ip = await containers.address(server), await containers.address(client)
    with trio.fail_after(30):
        async with example("dns.c", "dns_hook.py", *selecting(containers)) as run:
            await run.until(attached(run, "dns_queries", client))
            await run.until(attached(run, "dns_queries", server))
            for name, qtype in (("www.engine-test.example", "a"), ("db.engine-test", "aaaa")):
                await containers.exec(
                    client, "timeout", "1", "nslookup", f"-type={qtype}", name, server_ip,
                    check=False,
                )  # fmt: skip
            await run.until(lambda: len(run.lines("^dns: ")) >= 4)
            assert await run.stop() == 0, run.stderr
    queries = [e["data"] | {"who": e["container"]["name"]} for e in run.events("queries")]
    sent = [q for q in queries if q["outgoing"]]
    received = [q for q in queries if not q["outgoing"]]
    assert {(q["name"], q["qtype"]) for q in sent} == {
        ("www.engine-test.example", 1),
        ("db.engine-test", 28),
    }, queries
    for q in sent:
        assert (q["who"], q["saddr"], q["daddr"], q["dport"]) == (client, client_ip, server_ip, 53)
        assert q["sport"] > 1024
    # Every query the client sent arrived in the server's netns, the same packet seen twice.
    key = ("name", "qtype", "id", "sport", "saddr", "daddr")
    assert sorted(tuple(q[k] for k in key) for q in received) == sorted(
        tuple(q[k] for k in key) for q in sent
    )
    assert {q["who"] for q in received} == {server}
    lines = run.lines("^dns: ")
    assert f"dns: {client} asked {server_ip} for www.engine-test.example (A)" in lines
    assert f"dns: {server} received from {client_ip} a query for db.engine-test (AAAA)" in lines
    assert len(lines) == len(queries)


def table_rows(lines: list[str]) -> dict[str, tuple[int, ...]]:
    """The last table tc_bytes_hook.py printed: container -> (in pkts, in bytes, out...)."""
    last = max(i for i, line in enumerate(lines) if "CONTAINER" in line)
    rows = [line.removeprefix("tc_bytes: ").split() for line in lines[last + 1 :]]
    return {row[0]: tuple(int(n) for n in row[1:]) for row in rows}


async def test_tc_bytes_table_per_container(containers: Containers) -> None:
    pinger = containers.start("ping", "sleep", "300")
    quiet = containers.start("quiet", "sleep", "300")
    with trio.fail_after(30):
        async with periodic("tc_bytes", containers) as run:
            for name in (pinger, quiet):
                for program in ("into_container", "out_of_container"):
                    await run.until(attached(run, program, name))
            await containers.exec(pinger, "ping", "-c", "4", "-i", "0.2", BRIDGE)
            # A periodic table that has the pings in it, then Ctrl-C for the final one.
            await run.until(
                lambda: table_rows(run.lines("^tc_bytes: ")).get(pinger, (0, 0, 0, 0))[2] >= 4
            )
            assert await run.stop() == 0, run.stderr
    packets = run.events("packets")
    icmp: dict[tuple[str, int], int] = {}
    expected: dict[str, list[int]] = {}
    for e in packets:
        name, data = e["container"]["name"], e["data"]
        row = expected.setdefault(name, [0, 0, 0, 0])
        at = 0 if data["direction"] == 0 else 2
        row[at] += 1
        row[at + 1] += data["len"]
        if data["protocol"] == 1:
            icmp[name, data["direction"]] = icmp.get((name, data["direction"]), 0) + 1
    # 4 echo requests out of the pinger and 4 replies into it; no ICMP for the quiet one.
    assert icmp == {(pinger, 0): 4, (pinger, 1): 4}, icmp
    # The kernel's map (the table) and the per-packet events agree exactly, per container.
    final = table_rows(run.lines("^tc_bytes: "))
    assert final == {name: tuple(row) for name, row in expected.items()}, (final, expected)
    assert final[pinger][3] >= 4 * 98  # four 98-byte echo requests at least


async def run_python_as(prefix: str, code: str, tmp_path: Path) -> tuple[str, int]:
    """Run ``code`` in /usr/bin/python3.11 under a process name of its own that begins with
    ``prefix``: that name and the pid."""
    comm = f"{prefix}-{uuid.uuid4().hex[:6]}"
    alias = tmp_path / comm
    alias.symlink_to("/usr/bin/python3.11")
    done = await trio.run_process(
        [str(alias), "-c", f"import os; print(os.getpid())\n{code}"], capture_stdout=True
    )
    return comm, int(done.stdout.split()[0])


# Numeric only: no lookup leaves the machine.
LOOKUPS = """\
import socket
socket.getaddrinfo('127.0.0.1', 80, flags=socket.AI_NUMERICHOST)
try:
    socket.getaddrinfo('not-a-number', 80, flags=socket.AI_NUMERICHOST)
except socket.gaierror:
    pass
"""

# CPython 3.11 fires the probe only while profiling is on; engine_key is on line 3 (line 1
# prints the pid).
PROFILED_SORT = """\
import sys
def engine_key(x):
    return -x
sys.setprofile(lambda *args: None)
sorted(range(200), key=engine_key)
"""


async def test_getaddrinfo_lookups_and_outcomes(root: None, tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with example("getaddrinfo_uprobe.c", "getaddrinfo_uprobe_hook.py") as run:
            await run.until(attached(run, "lookup_start"))
            await run.until(attached(run, "lookup_done"))
            comm, pid = await run_python_as("gai", LOOKUPS, tmp_path)
            await run.until(lambda: len(run.lines(rf"\(pid {pid}\)")) >= 2)
            assert await run.stop() == 0, run.stderr
    ours = [(e["data"]["host"], e["data"]["ret"]) for e in run.events() if e["data"]["pid"] == pid]
    assert ours == [("127.0.0.1", 0), ("not-a-number", socket.EAI_NONAME)]
    assert run.lines(rf"\(pid {pid}\)") == [
        f"getaddrinfo: {comm} (pid {pid}) 127.0.0.1 -> ok",
        f"getaddrinfo: {comm} (pid {pid}) not-a-number -> EAI_NONAME",
    ]
    assert f"{comm} looked up 2 names, 1 failed" in run.lines("looked up")[-1]


async def test_python_usdt_counts_calls_per_process(root: None, tmp_path: Path) -> None:
    with trio.fail_after(40):
        async with example(
            "python_usdt.c", "python_usdt_hook.py", env={"PYTHON_USDT_INTERVAL": "0.5"}
        ) as run:
            await run.until(attached(run, "on_python_call"))
            _, pid = await run_python_as("usdt", PROFILED_SORT, tmp_path)
            await run.until(lambda: run.lines(rf"^python_usdt: pid {pid}: engine_key=200 "))
            assert await run.stop() == 0, run.stderr
    keys = [
        e["data"]
        for e in run.events("calls")
        if e["data"]["pid"] == pid and e["data"]["function"] == "engine_key"
    ]
    assert len(keys) == 200 and {(k["file"], k["line"]) for k in keys} == {("<string>", 3)}
    final = run.lines(rf"^python_usdt: pid {pid}: ")[-1]
    assert final.startswith(f"python_usdt: pid {pid}: engine_key=200 (<string>)"), final


async def test_exits_bcc_names_each_exit_with_its_container(containers: Containers) -> None:
    traced = containers.start("exits")
    other = containers.start("other")
    with trio.fail_after(40):
        async with engine_process(
            str(EXAMPLES / "exits_bcc.c"), "--select", f"name={traced}"
        ) as run:
            await run.until(attached(run, "tracepoint__sched__sched_process_exit"))
            await containers.exec(other, "sh", "-c", "sh -c 'exit 4'; true")
            await containers.exec(traced, "sh", "-c", "sh -c 'exit 3'; true")
            await run.until(lambda: [e for e in run.events("exits") if e["data"]["exit_code"]])
            assert await run.stop() == 0, run.stderr
    # Only the selected container's exits reach Python: the others are dropped in the kernel.
    assert {e["container"]["name"] for e in run.events("exits")} == {traced}
    (three,) = [e["data"] for e in run.events("exits") if e["data"]["exit_code"]]
    assert (three["exit_code"], three["signal"], three["comm"]) == (3, 0, "sh")
    assert three["ppid"] > 1 and three["pid"] not in (0, three["ppid"])


async def test_readsize_bcc_histogram_per_container(containers: Containers) -> None:
    reader = containers.start("reader")
    with trio.fail_after(40):
        async with engine_process(str(EXAMPLES / "readsize_bcc.c"), *selecting(containers)) as run:
            await run.until(attached(run, "tracepoint__syscalls__sys_exit_read"))
            await containers.exec(
                reader, "dd", "if=/dev/zero", "of=/dev/null", "bs=4096", "count=300"
            )
            assert await run.stop() == 0, run.stderr
    (sizes,) = run.of_type("map")
    assert (sizes["map"], sizes["kind"]) == ("sizes", "log2_histogram")
    (section,) = [s for s in sizes["entries"] if s["container"]]
    assert section["container"]["name"] == reader
    assert section["key"] == {"mntns_id": section["container"]["mntns"]}
    page = next(b for b in section["value"] if b["low"] == 4096)
    assert page["high"] == 8191 and page["count"] >= 300


async def test_read_sizes_batches_histogram_per_container(containers: Containers) -> None:
    reader = containers.start("reader")
    script = [sys.executable, str(EXAMPLES / "read_sizes_batches.py")]
    with trio.fail_after(40):
        async with engine_process(*selecting(containers), command=script) as run:
            await run.line("^ready$")
            await containers.exec(
                reader, "dd", "if=/dev/zero", "of=/dev/null", "bs=4096", "count=300"
            )
            assert await run.stop() == 0, run.stderr
    assert len(run.records) == 1, run.stderr  # only the selected container's reads come
    (histogram,) = run.records
    assert histogram["container"] == reader
    assert histogram["buckets"]["4096-8191"] >= 300
    assert histogram["reads"] == sum(histogram["buckets"].values())


async def test_read_sizes_min_size_parameter(containers: Containers) -> None:
    reader = containers.start("reader", "sleep", "300")
    gadget = str(EXAMPLES / "read_sizes.c")
    with trio.fail_after(40):
        async with engine_process(
            gadget, "--param", "min_size=4096", *selecting(containers)
        ) as run:
            await run.until(attached(run, "on_read"))
            for size, count in ((100, 3), (8192, 2)):
                await containers.exec(
                    reader, "dd", "if=/dev/zero", "of=/dev/null", f"bs={size}", f"count={count}"
                )

            def dd_sizes() -> list[int]:
                return [e["data"]["size"] for e in run.events("reads") if e["data"]["comm"] == "dd"]

            # The reads of 100 bytes come first: once the second page is seen, they would have been.
            await run.until(lambda: dd_sizes().count(8192) == 2, 10, "dd's two page reads")
            assert await run.stop() == 0, run.stderr
    assert dd_sizes() == [8192, 8192]
    assert all(e["data"]["size"] >= 4096 for e in run.events("reads")), run.events()
