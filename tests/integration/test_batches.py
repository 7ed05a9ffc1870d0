"""``batches()`` carries the values, origins and containers ``events()`` carries (docs/api.md).

Two engines run the same gadget at once: each has its own programs on the same tracepoint, so
every exec is written to both engines' buffers, with the same fields and the same origin. One
engine is read with ``events()``, the other with ``batches()``; the records of every map (a
ring buffer and a perf buffer) must agree, container by container. Only processes whose name
starts with ``engbatch-`` are written, so the counts are exact whatever else runs here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
import trio

import engine
from engine.gadget.model import Gadget
from tests.integration.test_origin import exec_in, exec_on_host
from tests.support.docker import Containers

pytestmark = [pytest.mark.integration, pytest.mark.docker]

PREFIX = "engbatch-"
GADGET = r"""
struct exec_t {
    u32 pid;
    u32 tid;
    u64 uid_gid;
    __be16 port;
    u8 flags[3];
    char comm[16];
};
BPF_RINGBUF_OUTPUT(ring, 64);
BPF_PERF_OUTPUT(perf);

SEC("tracepoint/sched/sched_process_exec")
int on_exec(void *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    struct exec_t e = {.pid = id >> 32, .tid = id, .uid_gid = bpf_get_current_uid_gid()};
    e.port = bpf_htons(8080);
    e.flags[0] = 1; e.flags[2] = 3;
    bpf_get_current_comm(&e.comm, sizeof(e.comm));
    if (e.comm[0] != 'e' || e.comm[1] != 'n' || e.comm[2] != 'g' || e.comm[3] != 'b' ||
        e.comm[4] != 'a' || e.comm[5] != 't' || e.comm[6] != 'c' || e.comm[7] != 'h')
        return 0;
    ring.ringbuf_output(&e, sizeof(e), 0);
    perf.perf_submit(ctx, &e, sizeof(e));
    return 0;
}
"""
Row = tuple[str, tuple[tuple[str, Any], ...], tuple[int, ...], str | None]


def key(source: str, data: Mapping[str, Any], origin: Mapping[str, int], container: Any) -> Row:
    # A task's origin; {} for the kernel's own work (docs/events.md, "Origin").
    origin_values = tuple(origin.get(k, 0) for k in ("tgid", "mntns", "netns", "cgroup"))
    values = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(data.items()))
    return source, values, origin_values, container and container["id"]


def batch_rows(batch: engine.Batch) -> list[Row]:
    """Each row in events()' terms, read from the columns as a user would."""
    out = []
    for i in range(len(batch)):
        data: dict[str, Any] = {}
        for name in batch.fields.dtype.names or ():
            value = batch.fields[name][i]
            if isinstance(value, bytes):
                data[name] = value.decode()
            elif isinstance(value, np.ndarray):
                data[name] = value.tolist()
            else:
                data[name] = value.item()
        origin = {k: int(batch.origin[k][i]) for k in ("tgid", "mntns", "netns", "cgroup")}
        if batch.origin["kind"][i] != 1:  # not a task: events() gives {}
            origin = {}
        out.append(key(batch.map, data, origin, batch.container_of(i)))
    return out


async def test_a_batch_and_the_events_carry_identical_values_and_containers(
    containers: Containers,
) -> None:
    box = containers.start("box")
    gadget = Gadget.from_source(GADGET, "batch_gadget.c")
    from_events: Counter[Row] = Counter()
    from_batches: Counter[Row] = Counter()
    expected = 2 * 5  # five execs, each in both maps
    complete = trio.Event()

    def check() -> None:
        if from_events.total() >= expected and from_batches.total() >= expected:
            complete.set()

    async def read_events(eng: engine.Engine) -> None:
        async for record in eng.events():
            if isinstance(record, engine.Event) and record.origin is not None:
                data = dict(record.data)
                from_events[key(record.source, data, record.origin, record.container)] += 1
                check()

    async def read_batches(batches: engine.BatchStream) -> None:
        async with batches:
            async for batch in batches:
                from_batches.update(batch_rows(batch))
                check()

    with trio.fail_after(90):
        async with (
            engine.open_engine(gadget, iter_interval=3600) as by_events,
            engine.open_engine(gadget, iter_interval=3600) as by_batches,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(read_events, by_events)
            # Registered here: every record read from now on is the stream's.
            nursery.start_soon(read_batches, by_batches.batches())
            await exec_in(containers, box, f"{PREFIX}c1", f"{PREFIX}c2", f"{PREFIX}c3")
            await exec_on_host(f"{PREFIX}h1", f"{PREFIX}h2")
            await complete.wait()
            await trio.sleep(0.2)  # anything more (there should be nothing) comes too
            nursery.cancel_scope.cancel()
    # Nothing of the batches' maps went to events() meanwhile.
    assert by_batches.stats.for_map("batch_gadget", "ring").delivered == expected // 2
    assert from_batches == from_events
    assert from_events.total() == expected
    named = Counter(row[3] is not None for row in from_events.elements())
    assert named == {True: 6, False: 4}  # the container's three execs, in both maps
    for row in from_events:
        data = dict(row[1])
        assert data["port"] == 8080 and data["flags"] == (1, 0, 3)
        assert data["comm"].startswith(PREFIX)
