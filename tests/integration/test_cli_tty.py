"""`engine run` as a person runs it: on a terminal (a real pseudo-terminal), piped, stopped
with a signal, and with its metrics endpoint scraped over a plain socket."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import trio

from tests.support.commands import free_port
from tests.support.constants import EXAMPLES, ROOT
from tests.support.process import ENGINE, engine_process
from tests.support.terminal import on_terminal

pytestmark = pytest.mark.integration

EXECSNOOP = str(EXAMPLES / "execsnoop.c")


async def _exec_probe(tmp_path: Path) -> str:
    """Run a uniquely named program, so its exec is recognisable in the output."""
    probe = tmp_path / "engine-tty-probe"
    if not probe.exists():
        shutil.copy("/bin/true", probe)
    await trio.run_process([str(probe)])
    return str(probe)


async def test_run_on_a_terminal_shows_the_live_table(root: None, tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with on_terminal(300, 100, EXECSNOOP, "--duration", "3") as (engine, terminal):
            await engine.line(r"attached 1 program in")
            probe = await _exec_probe(tmp_path)
            assert await engine.process.wait() == 0
    text = terminal.text
    assert text.count("\x1b[H") >= 2  # redrawn in place, more than once
    last = text.rsplit("\x1b[H", 1)[1]
    assert re.search(r"engine: execsnoop\.c\s+\d+\.\ds\s+events [1-9]", last)
    assert re.search(r"CONTAINER\s+EVENTS\s+LAST\s+STATE", last)
    assert re.search(r"\(host\)\s+[1-9]\d*\s", last)
    assert re.search(r"execsnoop/events  \d+ events", last)
    assert re.search(r"CONTAINER\s+PID\s+PPID\s+UID\s+MNTNS_ID\s+COMM\s+FILENAME", last)
    # Other execs on the machine may have scrolled it out of the last frame, not of all frames.
    assert re.search(rf"\(host\)\s+\d+\s.*\s{re.escape(probe)}\s*\x1b\[K", text)
    assert "{" not in last  # a table, not JSON
    assert any(line.startswith("engine: stopped (duration)") for line in engine.stderr)


async def test_run_into_a_pipe_gives_json_lines(root: None) -> None:
    with trio.fail_after(60):
        result = await trio.run_process(
            f"{' '.join(ENGINE)} {EXECSNOOP} --duration 1.5 | cat",
            shell=True,
            capture_stdout=True,
            capture_stderr=True,
            cwd=ROOT,
        )
    lines = result.stdout.decode().splitlines()
    records = [json.loads(line) for line in lines]
    # The contract's keys and values; records may gain keys, never lose or change these.
    expected = {
        "type": "attached",
        "gadget": "execsnoop",
        "program": "trace_execve",
        "kind": "tracepoint",
        "target": "syscalls/sys_enter_execve",
        "netns": None,
        "interface": None,
        "container": None,
    }
    assert {key: records[0].get(key, "<missing>") for key in expected} == expected
    # The shell's own exec of `cat` may race the attach; the `cat` itself is not needed:
    assert all("type" in r for r in records)
    assert b"\x1b[" not in result.stdout
    assert "compiling execsnoop.c" in result.stderr.decode()


async def test_sigint_stops_with_a_summary_line(root: None, tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with engine_process(EXECSNOOP, stdout=subprocess.DEVNULL) as engine:
            await engine.line(r"attached 1 program in")
            await _exec_probe(tmp_path)
            engine.process.send_signal(signal.SIGINT)
            assert await engine.process.wait() == 0
            summary = await engine.line(r"^engine: stopped")
    assert re.fullmatch(
        r"engine: stopped \(SIGINT\) after \d+\.\ds: \d+ records, [1-9]\d* events delivered, "
        r"0 lost",
        summary,
    )
    assert not any("Traceback" in line for line in engine.stderr)


def _scrape(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.decode()


async def test_metrics_endpoint_serves_counters(root: None, tmp_path: Path) -> None:
    port = free_port()
    with trio.fail_after(60):
        async with engine_process(EXECSNOOP, "--metrics", f"127.0.0.1:{port}") as engine:
            await engine.line(rf"metrics on http://127\.0\.0\.1:{port}/metrics")
            await engine.line(r"attached 1 program in")
            probe = await _exec_probe(tmp_path)
            # Counted before it is written out: once its record is here, the metrics have it.
            await engine.until(
                lambda: [e for e in engine.events() if e["data"]["filename"] == probe],
                10,
                "the probe's exec",
            )
            reply = await trio.to_thread.run_sync(_scrape, port)
            engine.process.send_signal(signal.SIGTERM)
            assert await engine.process.wait() == 0
            await engine.line(r"^engine: stopped \(SIGTERM\)")
    head, _, body = reply.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200 OK")
    assert "text/plain; version=0.0.4" in head
    received = re.search(
        r'^engine_events_received_total\{gadget="execsnoop",map="events"\} (\d+)$', body, re.M
    )
    assert received is not None
    assert int(received.group(1)) >= 1
    assert "# TYPE engine_attach_latency_seconds histogram" in body
    assert re.search(r"^engine_containers \d+$", body, re.M)
    assert re.search(r'^engine_records_total\{type="attached"\} 1$', body, re.M)


async def test_metrics_address_in_use_is_one_line_exit_2(root: None) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with trio.fail_after(60):
            result = await trio.run_process(
                [*ENGINE, EXECSNOOP, "--metrics", f"127.0.0.1:{port}", "--duration", "1"],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                cwd=ROOT,
            )
    assert result.returncode == 2
    assert f"cannot serve metrics on 127.0.0.1:{port}" in result.stderr.decode()
    assert b"Traceback" not in result.stderr
