"""Start-up on a host with 1,000 network namespaces already present.

The sources hand back what exists through ``task_status.started(snapshot)``: a start-up that
pushed its listing into a bounded channel that nobody reads until ``start()`` returns would
hang here. The engine must start, attach its per-netns socket filter in every one of them,
trace, and detach them all on stop.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from engine import open_engine
from tests.faults.kernel_state import fd_targets

pytestmark = pytest.mark.integration

GADGET = Path(__file__).parent / "gadgets" / "netns_packets.c"
COUNT = 1000


def _batch(commands: Iterable[str]) -> None:
    """Many ``ip`` commands in one process (1,000 ``ip netns add`` take under a second)."""
    text = "".join(f"{c}\n" for c in commands)
    subprocess.run(["ip", "-batch", "-"], input=text, text=True, check=True, timeout=120)


@pytest.fixture
def many_netns(root: None) -> Iterator[list[str]]:
    names = [f"engine-test-{uuid.uuid4().hex[:8]}-{i}" for i in range(COUNT)]
    try:
        _batch(f"netns add {name}" for name in names)
        yield names
    finally:
        existing = set(os.listdir("/run/netns"))
        _batch(f"netns del {name}" for name in names if name in existing)


def _ours_held() -> list[str]:
    """The fds this test could leave: netns handles, BPF objects, sockets (but the Docker
    client's unix sockets, a pool that lives on)."""
    return [
        t
        for t in fd_targets()
        if t.startswith(("net:[", "anon_inode:bpf", "socket")) and t != "socket (unix)"
    ]


async def test_engine_starts_and_traces_with_1000_netns_present(many_netns: list[str]) -> None:
    inodes = {os.stat(f"/run/netns/{name}").st_ino: name for name in many_netns}
    held_before = _ours_held()
    records: list[dict[str, Any]] = []
    changed = trio.Event()

    async def collect(eng: Any) -> None:
        nonlocal changed
        async for record in eng.events():
            records.append(record.to_json())
            changed.set()
            changed = trio.Event()

    async def until(check: Any, seconds: float) -> None:
        with trio.fail_after(seconds):
            while not check():
                await changed.wait()

    def per_inode(kind: str) -> Counter[int]:
        return Counter(r["netns"] for r in records if r["type"] == kind and r["netns"] in inodes)

    traced = many_netns[0]
    traced_inode = os.stat(f"/run/netns/{traced}").st_ino
    with trio.fail_after(300):
        async with (
            # No selection: every netns is traced, these named ones too.
            open_engine(GADGET, iter_interval=3600) as eng,
            trio.open_nursery() as nursery,
        ):
            # start() returned: what existed is in the world already, not in some channel.
            assert set(inodes) <= set(eng.world.netns_paths)
            nursery.start_soon(collect, eng)
            await until(lambda: len(per_inode("attached")) == COUNT, 240)
            assert not per_inode("attach_failed")

            await trio.run_process(["ip", "-n", traced, "link", "set", "lo", "up"])
            send_one = (
                "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
                ".sendto(b'x', ('127.0.0.1', 9))"
            )
            await trio.run_process(["ip", "netns", "exec", traced, "python3", "-c", send_one])
            await until(
                lambda: any(
                    r["type"] == "event" and r["data"]["netns_id"] == traced_inode for r in records
                ),
                30,
            )
            eng.stop()
    assert per_inode("attached") == Counter(dict.fromkeys(inodes, 1))
    assert per_inode("detached") == Counter(dict.fromkeys(inodes, 1))
    assert _ours_held() == held_before
