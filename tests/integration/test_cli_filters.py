"""``engine run --filter`` on exec and packet records of real containers: only the events for
which every expression holds reach the JSON lines and the hooks; a bad expression stops the
run before anything is compiled."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import trio

from tests.support.constants import BRIDGE, EXAMPLES, ROOT
from tests.support.docker import Containers
from tests.support.hooks import hooked, seen_hook
from tests.support.process import ENGINE, EngineProcess, engine_process

pytestmark = [pytest.mark.integration, pytest.mark.docker]

# An echo reply of a 200-byte ping, as the classifier sees it: Ethernet, IP, ICMP headers.
REPLY_LEN = 14 + 20 + 8 + 200


def _attached(run: EngineProcess, program: str, container: str | None = None) -> bool:
    return any(
        r["program"] == program and (container is None or r["container"] == container)
        for r in run.of_type("attached")
    )


async def test_only_matching_exec_and_packet_events_reach_json_and_hooks(
    containers: Containers, tmp_path: Path
) -> None:
    kept = containers.start("kept", "sleep", "300")
    other = containers.start("other", "sleep", "300")
    filters = [
        "filename~^/bin/(true|false)$",
        "filename!~false",
        f"container.name!={other}",
        "protocol==1",
        f"len>{REPLY_LEN - 100}",
        f"len>={REPLY_LEN}",
        f"len<{REPLY_LEN + 100}",
        f"len<={REPLY_LEN}",
        "direction!=1",  # replies into the container, not the requests out of it
    ]
    options = [arg for f in filters for arg in ("--filter", f)]
    gadgets = [str(EXAMPLES / "execsnoop.c"), str(EXAMPLES / "tc_bytes.c")]
    with trio.fail_after(60):
        async with engine_process(
            *gadgets, "--select", *containers.selection, "--hook", seen_hook(tmp_path), *options
        ) as run:
            await run.until(lambda: _attached(run, "trace_execve"))
            for name in (kept, other):
                for program in ("into_container", "out_of_container"):
                    await run.until(lambda: _attached(run, program, name))  # noqa: B023
            for name in (kept, other):
                for program in ("/bin/true", "/bin/false", "/bin/echo"):
                    await containers.exec(name, program, check=False)
                for size in (100, 200, 300):
                    await containers.exec(name, "ping", "-c", "2", "-s", str(size), BRIDGE)
            await run.until(lambda: len(run.events()) >= 3)
            assert await run.stop() == 0, run.stderr
    events = run.events()
    execs = [(e["container"]["name"], e["data"]["filename"]) for e in run.events("events")]
    assert execs == [(kept, "/bin/true")], execs
    packets = [e["data"] for e in run.events("packets")]
    assert [(p["len"], p["direction"], p["protocol"]) for p in packets] == [
        (REPLY_LEN, 0, 1)
    ] * 2, packets
    assert {e["container"]["name"] for e in events} == {kept}
    assert hooked(run) == [
        [e["gadget"], e["source"], e["container"]["name"], e["data"]] for e in events
    ]


async def test_a_bad_filter_is_one_line_and_exit_2_before_compiling(root: None) -> None:
    with trio.fail_after(30):
        result = await trio.run_process(
            [*ENGINE, str(EXAMPLES / "execsnoop.c"), "--filter", "pidd>=3"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
        )
    assert result.returncode == 2
    lines = result.stderr.decode().splitlines()
    assert lines == [
        "engine: --filter 'pidd>=3': unknown field 'pidd'; execsnoop/events has pid, ppid,"
        " uid, mntns_id, comm, filename; every event has gadget, source,"
        " container.name, container.image, k8s.namespace, k8s.pod"
    ]
    assert result.stdout == b""
