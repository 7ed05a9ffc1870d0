"""Every example as its top comment says to run it: `engine run examples/NAME.c --hook
examples/NAME_hook.py`, in a subprocess, against real containers. Traffic goes only between
test containers and to the docker bridge; the assertions are on the JSON records (names,
addresses, ports, counts) and on what the hook script printed."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.lowlevel

pytestmark = [pytest.mark.integration, pytest.mark.docker]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
IMAGE = os.environ.get("ENGINE_TEST_IMAGE", "engine-test:latest")
BRIDGE = "172.17.0.1"  # the docker bridge: test traffic goes nowhere else

Record = dict[str, Any]


def docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def http_get(ip: str, port: int = 8080) -> str:
    """A shell command fetching / over TCP with nc (busybox's wget crashes in this image)."""
    return f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} {port} >/dev/null"


def ip_of(name: str) -> str:
    return docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", name)


@attrs.define
class Containers:
    """Test containers named engine-test-<tag>-<role>; all removed after the test."""

    tag: str = attrs.Factory(lambda: uuid.uuid4().hex[:6])
    made: list[str] = attrs.Factory(list)

    def name(self, role: str) -> str:
        return f"engine-test-{self.tag}-{role}"

    def start(self, role: str, *command: str) -> str:
        name = self.name(role)
        self.made.append(name)
        docker("run", "-d", "--name", name, IMAGE, *command)
        return name

    async def exec(self, name: str, *command: str, check: bool = True) -> str:
        def run() -> str:
            done = subprocess.run(
                ["docker", "exec", name, *command], capture_output=True, text=True, check=check
            )
            return done.stdout + done.stderr

        return await trio.to_thread.run_sync(run)


@pytest.fixture
def containers(docker_daemon: None) -> Iterator[Containers]:
    made = Containers()
    yield made
    for _ in range(3):  # a busy daemon sometimes fails a removal: try again, then complain
        left = [n for n in made.made if docker("ps", "-aq", "--filter", f"name=^{n}$")]
        if not left:
            return
        subprocess.run(["docker", "rm", "-f", *left], capture_output=True, check=False)
    assert not [n for n in made.made if docker("ps", "-aq", "--filter", f"name=^{n}$")]


@attrs.define
class EngineRun:
    """A running `engine run ... --output json`: its JSON records and its stderr lines."""

    process: trio.Process
    records: list[Record] = attrs.Factory(list)
    stderr: list[str] = attrs.Factory(list)
    _changed: trio.Event = attrs.Factory(trio.Event)

    async def collect(self, stream: trio.abc.ReceiveStream, into: Callable[[str], None]) -> None:
        buffer = b""
        async for chunk in stream:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                into(line.decode(errors="replace"))
            self._changed.set()
            self._changed = trio.Event()
        if buffer:
            into(buffer.decode(errors="replace"))
        self._changed.set()

    async def wait_for(self, found: Callable[[EngineRun], Any]) -> Any:
        """The first true value of ``found(self)``, re-checked as output arrives."""
        while not (value := found(self)):
            if self.process.returncode is not None:
                raise AssertionError(f"engine exited early: {self.stderr}")
            await self._changed.wait()
        return value

    async def stop(self) -> None:
        """Ctrl-C, as a person would stop it; the hooks' final lines are then printed."""
        self.process.send_signal(signal.SIGINT)
        await self.process.wait()
        await trio.lowlevel.checkpoint()  # let the readers take the last output
        assert self.process.returncode == 0, self.stderr

    def events(self, source: str | None = None) -> list[Record]:
        return [
            r
            for r in self.records
            if r["type"] == "event" and (source is None or r["source"] == source)
        ]

    def lines(self, pattern: str) -> list[str]:
        return [line for line in self.stderr if re.search(pattern, line)]


@asynccontextmanager
async def engine_run(
    gadget: str, hook: str, *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[EngineRun]:
    command = [sys.executable, "-m", "engine", "run", str(EXAMPLES / gadget)]
    command += ["--hook", str(EXAMPLES / hook), "--output", "json", *args]
    async with trio.open_nursery() as nursery:
        process = await trio.lowlevel.open_process(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
        )
        run = EngineRun(process)
        assert process.stdout is not None and process.stderr is not None
        nursery.start_soon(run.collect, process.stdout, lambda s: run.records.append(json.loads(s)))
        nursery.start_soon(run.collect, process.stderr, run.stderr.append)
        try:
            yield run
        finally:
            if process.returncode is None:
                process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


def attached(program: str, container: str | None = None) -> Callable[[EngineRun], bool]:
    """``program`` is attached (in ``container``'s netns when given)."""

    def found(run: EngineRun) -> bool:
        return any(
            r["type"] == "attached"
            and r["program"] == program
            and (container is None or r["container"] == container)
            for r in run.records
        )

    return found


async def test_execsnoop_counts_execs_per_container(containers: Containers) -> None:
    busy = containers.start("busy", "sleep", "300")
    quiet = containers.start("quiet", "sleep", "300")
    with trio.fail_after(30):
        async with engine_run(
            "execsnoop.c",
            "execsnoop_hook.py",
            "--select",
            f"name={containers.name('*')}",
            env={"EXECSNOOP_INTERVAL": "0.5"},
        ) as run:
            await run.wait_for(attached("trace_execve"))
            for _ in range(3):
                await containers.exec(busy, "/bin/true")
            await containers.exec(quiet, "/bin/true")
            await run.wait_for(lambda r: r.lines(rf"\b{busy}=\d+"))
            await run.stop()
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
    server_ip, client_ip = ip_of(server), ip_of(client)
    with trio.fail_after(30):
        async with engine_run(
            "tcpconnect.c", "tcpconnect_hook.py", "--select", f"name={client}"
        ) as run:
            await run.wait_for(attached("tcp_state"))
            for _ in range(2):
                await containers.exec(client, "sh", "-c", http_get(server_ip))
            # Nothing listens on the bridge's port 1: refused.
            await containers.exec(client, "nc", "-w", "1", BRIDGE, "1", check=False)
            # The server is not selected: its connection is dropped in the kernel.
            await containers.exec(server, "sh", "-c", http_get(server_ip))
            await run.wait_for(lambda r: len(r.events("connections")) >= 3)
            await run.stop()
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
    server_ip = ip_of(server)
    fetch = http_get(server_ip)
    with trio.fail_after(40):
        async with engine_run(
            "tcpconnect.c", "tcpconnect_first_hook.py", "--select", f"name={containers.name('*')}"
        ) as run:
            await run.wait_for(attached("tcp_state"))
            # Started while the engine runs; each connects a second later, twice.
            web = containers.name("web")
            refused = containers.name("refused")
            await trio.to_thread.run_sync(
                containers.start, "web", "sh", "-c", f"sleep 1; {fetch}; {fetch}; sleep 300"
            )
            await trio.to_thread.run_sync(
                containers.start, "refused", "sh", "-c", f"sleep 1; nc -w 1 {BRIDGE} 1; sleep 300"
            )
            silent = await trio.to_thread.run_sync(containers.start, "silent", "sleep", "300")
            await run.wait_for(lambda r: len(r.lines(r"^first-connect: ")) >= 2)
            await trio.to_thread.run_sync(docker, "rm", "-f", silent)
            await run.wait_for(lambda r: r.lines(rf"^first-connect: {silent} "))
            await run.wait_for(
                lambda r: [e for e in r.events() if e["container"]["name"] == web][1:]
            )
            await run.stop()
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
    server_ip, client_ip = ip_of(server), ip_of(client)
    with trio.fail_after(30):
        async with engine_run(
            "dns.c", "dns_hook.py", "--select", f"name={containers.name('*')}"
        ) as run:
            await run.wait_for(attached("dns_queries", client))
            await run.wait_for(attached("dns_queries", server))
            for name, qtype in (("www.engine-test.example", "a"), ("db.engine-test", "aaaa")):
                await containers.exec(
                    client, "timeout", "1", "nslookup", f"-type={qtype}", name, server_ip,
                    check=False,
                )  # fmt: skip
            await run.wait_for(lambda r: len(r.lines("^dns: ")) >= 4)
            await run.stop()
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
        async with engine_run(
            "tc_bytes.c",
            "tc_bytes_hook.py",
            "--select",
            f"name={containers.name('*')}",
            env={"TC_BYTES_INTERVAL": "0.5"},
        ) as run:
            for name in (pinger, quiet):
                for program in ("into_container", "out_of_container"):
                    await run.wait_for(attached(program, name))
            await containers.exec(pinger, "ping", "-c", "4", "-i", "0.2", BRIDGE)
            # A periodic table that has the pings in it, then Ctrl-C for the final one.
            await run.wait_for(
                lambda r: table_rows(r.lines("^tc_bytes: ")).get(pinger, (0, 0, 0, 0))[2] >= 4
            )
            await run.stop()
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


async def run_python_as(comm: str, code: str, tmp_path: Path) -> int:
    """Run ``code`` in /usr/bin/python3.11 under the process name ``comm``; its pid."""
    alias = tmp_path / comm
    alias.symlink_to("/usr/bin/python3.11")
    done = await trio.run_process(
        [str(alias), "-c", f"import os; print(os.getpid())\n{code}"], capture_stdout=True
    )
    return int(done.stdout.split()[0])


async def test_getaddrinfo_lookups_and_outcomes(root: None, tmp_path: Path) -> None:
    comm = f"gai-{uuid.uuid4().hex[:6]}"
    code = (
        "import socket\n"
        "socket.getaddrinfo('127.0.0.1', 80, flags=socket.AI_NUMERICHOST)\n"
        "try:\n"
        "    socket.getaddrinfo('not-a-number', 80, flags=socket.AI_NUMERICHOST)\n"
        "except socket.gaierror:\n"
        "    pass\n"
    )  # numeric only: no lookup leaves the machine
    with trio.fail_after(30):
        async with engine_run("getaddrinfo_uprobe.c", "getaddrinfo_uprobe_hook.py") as run:
            await run.wait_for(attached("lookup_start"))
            await run.wait_for(attached("lookup_done"))
            pid = await run_python_as(comm, code, tmp_path)
            await run.wait_for(lambda r: len(r.lines(rf"\(pid {pid}\)")) >= 2)
            await run.stop()
    ours = [(e["data"]["host"], e["data"]["ret"]) for e in run.events() if e["data"]["pid"] == pid]
    assert ours == [("127.0.0.1", 0), ("not-a-number", socket.EAI_NONAME)]
    assert run.lines(rf"\(pid {pid}\)") == [
        f"getaddrinfo: {comm} (pid {pid}) 127.0.0.1 -> ok",
        f"getaddrinfo: {comm} (pid {pid}) not-a-number -> EAI_NONAME",
    ]
    assert f"{comm} looked up 2 names, 1 failed" in run.lines("looked up")[-1]


async def test_python_usdt_counts_calls_per_process(root: None, tmp_path: Path) -> None:
    comm = f"usdt-{uuid.uuid4().hex[:6]}"
    # CPython 3.11 fires the probe only while profiling is on.
    code = (
        "import sys\n"
        "def engine_key(x):\n"
        "    return -x\n"
        "sys.setprofile(lambda *args: None)\n"
        "sorted(range(200), key=engine_key)\n"
    )
    with trio.fail_after(40):
        async with engine_run(
            "python_usdt.c", "python_usdt_hook.py", env={"PYTHON_USDT_INTERVAL": "0.5"}
        ) as run:
            await run.wait_for(attached("on_python_call"))
            pid = await run_python_as(comm, code, tmp_path)
            await run.wait_for(lambda r: r.lines(rf"^python_usdt: pid {pid}: engine_key=200 "))
            await run.stop()
    keys = [
        e["data"]
        for e in run.events("calls")
        if e["data"]["pid"] == pid and e["data"]["function"] == "engine_key"
    ]
    assert len(keys) == 200 and {(k["file"], k["line"]) for k in keys} == {
        ("<string>", 3)
    }  # line 1 prints the pid
    final = run.lines(rf"^python_usdt: pid {pid}: ")[-1]
    assert final.startswith(f"python_usdt: pid {pid}: engine_key=200 (<string>)"), final
