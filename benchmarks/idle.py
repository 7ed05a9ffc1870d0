"""(4) Idle cost: the engine with many selected containers and no events, CPU and RSS.

The engine runs in its own process (``engine run``) with a per-netns socket filter in every
selected container; its CPU time over the window comes from /proc/PID/stat (utime + stime).
The baseline, in the same run, is bcc's own loop idling on a ring buffer
(``ring_buffer_poll`` with a timeout, as bcc's tools do) in its own process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

from benchmarks import containers
from benchmarks.results import Figure

GADGETS = Path(__file__).with_name("gadgets")
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _wait_for_line(proc: subprocess.Popen[bytes], marker: bytes, timeout: float) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"process ended before printing {marker!r}")
        if marker in line:
            return
    raise TimeoutError(f"no {marker!r} within {timeout} s")


def _sample(proc: subprocess.Popen[bytes], seconds: float) -> dict[str, float]:
    before, t0 = cpu_seconds(proc.pid), time.monotonic()
    time.sleep(seconds)
    used, elapsed = cpu_seconds(proc.pid) - before, time.monotonic() - t0
    return {"cpu_percent": 100 * used / elapsed, "rss_mb": rss_mb(proc.pid), "seconds": elapsed}


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def measure_engine(names: list[str], seconds: float) -> dict[str, float]:
    cmd = [sys.executable, "-m", "benchmarks.idle", "engine", *names]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        for _ in names:  # one line per selected container's netns attached
            _wait_for_line(proc, b"attached", 120)
        time.sleep(1)  # let start-up work (reconcile, first iterator runs) settle
        return _sample(proc, seconds)
    finally:
        _stop(proc)


def measure_bcc(seconds: float) -> dict[str, float]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.idle", "bcc"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_line(proc, b"ready", 120)
        return _sample(proc, seconds)
    finally:
        _stop(proc)


def bcc_idle_loop() -> None:
    """The baseline process: bcc's loop on an idle ring buffer, until terminated."""
    from bcc import BPF

    from engine.bcc.loader import full_source
    from engine.gadget.model import Gadget

    bpf = BPF(text=full_source(Gadget.from_file(GADGETS / "getppid_ringbuf.c")))
    bpf.attach_tracepoint(tp="syscalls:sys_enter_getppid", fn_name=b"on_getppid")
    bpf["events"].open_ring_buffer(lambda _ctx, data, _size: bpf["events"].event(data))
    print("ready", flush=True)
    while True:
        bpf.ring_buffer_poll(1000)


async def engine_idle(names: list[str]) -> None:
    """The engine's process: the idle gadget in the named containers, until terminated.

    It prints one line per netns attached; the engine CLI has no --select yet.
    """
    from engine.engine import open_engine

    selection = [f"name={name}" for name in names]
    async with open_engine(GADGETS / "idle_socket.c", select=selection) as engine:
        async for record in engine.events():
            data = record.to_json()
            if data["type"] == "attached" and data.get("netns") is not None:
                print("attached", data["netns"], flush=True)


def measure(count: int, seconds: float) -> tuple[list[Figure], dict[str, Any]]:
    with containers.sleeping("idle", count) as names:
        engine = measure_engine(names, seconds)
    bcc = measure_bcc(seconds)
    figures = [
        Figure(
            f"idle CPU, {count} selected containers",
            engine["cpu_percent"],
            "% of a CPU",
            bcc["cpu_percent"],
            "bcc loop, idle, no containers",
            "< 1%",
            engine["cpu_percent"] < 1,
            f"over {seconds:.0f} s",
        ),
        Figure(
            f"idle RSS, {count} selected containers",
            engine["rss_mb"],
            "MB",
            bcc["rss_mb"],
            "bcc loop",
        ),
    ]
    return figures, {"engine": engine, "bcc": bcc, "containers": count}


if __name__ == "__main__":
    if sys.argv[1:2] == ["engine"]:
        trio.run(engine_idle, sys.argv[2:])
    else:
        bcc_idle_loop()
