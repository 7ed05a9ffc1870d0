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

import pytest
import trio

from engine import open_engine
from tests.support.recorder import Recorder, recording

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


async def test_engine_starts_and_traces_with_1000_netns_present(many_netns: list[str]) -> None:
    inodes = {os.stat(f"/run/netns/{name}").st_ino: name for name in many_netns}

    def per_inode(rec: Recorder, kind: str) -> Counter[int]:
        return Counter(r["netns"] for r in rec.of_type(kind) if r["netns"] in inodes)

    traced = many_netns[0]
    traced_inode = os.stat(f"/run/netns/{traced}").st_ino
    with trio.fail_after(300):
        # No selection: every netns is traced, these named ones too.
        async with open_engine(GADGET, iter_interval=3600) as eng, recording(eng) as rec:
            # start() returned: what existed is in the world already, not in some channel.
            assert set(inodes) <= set(eng.world.netns_paths)
            await rec.until(
                lambda: len(per_inode(rec, "attached")) == COUNT, 240, "every netns attached"
            )
            assert not per_inode(rec, "attach_failed")

            await trio.run_process(["ip", "-n", traced, "link", "set", "lo", "up"])
            send_one = (
                "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
                ".sendto(b'x', ('127.0.0.1', 9))"
            )
            await trio.run_process(["ip", "netns", "exec", traced, "python3", "-c", send_one])
            await rec.until(
                lambda: any(r["data"]["netns_id"] == traced_inode for r in rec.events()),
                30,
                "the traced netns's packet",
            )
    assert per_inode(rec, "attached") == Counter(dict.fromkeys(inodes, 1))
    assert per_inode(rec, "detached") == Counter(dict.fromkeys(inodes, 1))
