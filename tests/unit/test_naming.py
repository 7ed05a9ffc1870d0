"""MapNamer's fast path names records exactly as the placement rules do, record by record."""

from __future__ import annotations

import struct

import pytest

from engine.events.decode import Field, build_decoder
from engine.events.naming import MapNamer
from engine.events.origin import HEADER, Origin
from engine.events.ringbuf import HEADER as RING_HEADER
from engine.events.ringbuf import RecordRun, record_span
from engine.events.runs import EventRun, made
from engine.events.stats import MapStats
from engine.records import Event, Record
from engine.sources.containers import Container
from engine.world.held import Held
from engine.world.placement import place
from engine.world.selection import Selection
from engine.world.state import Verdict, World

HOST_NETNS, HOST_MNTNS = 4026531840, 4026531841
TASK, PACKET, KERNEL = 1, 2, 3
WEB = Container("a" * 64, "web", "img", 10, netns_inode=101, mntns_inode=201, cgroup_id=301)
DB = Container("b" * 64, "db", "img", 11, netns_inode=102, mntns_inode=202, cgroup_id=302)
PLAIN = [Field("pid", "u32"), Field("comm", "char[8]"), Field("arr", "u16[2]")]
NAMING = [Field("pid", "u32"), Field("mntns_id", "u32"), Field("ifindex", "u32")]


def make_world(*select: str) -> World:
    w = World(
        Selection.parse(list(select), [], False), host_netns=HOST_NETNS, host_mntns=HOST_MNTNS
    )
    w.add_container(WEB)
    w.add_container(DB)
    w.host_ifindexes[55] = 102
    return w


def raw(header: tuple[int, int, int, int, int, int], body: bytes) -> bytes:
    """kind, tgid, mntns, netns, cgroup, ifindex; then the gadget's record."""
    return struct.pack("<IIIIQII", *header, 0) + body


def batch_for(fields: list[Field]) -> list[bytes]:
    if fields is PLAIN:
        body = struct.pack("<I8s2H", 7, b"sh\0", 1, 2)
    else:
        body = struct.pack("<III", 7, 202, 55)
    return [
        raw((TASK, 7, 201, 101, 301, 0), body),  # web by mount namespace
        raw((TASK, 7, 999, 101, 302, 0), body),  # db by cgroup
        raw((TASK, 7, HOST_MNTNS, HOST_NETNS, 1, 0), body),  # the host (or the fields' say)
        raw((TASK, 8, 999, 5, 1, 0), body),  # nobody's, another task
        raw((PACKET, 0, 0, HOST_NETNS, 0, 55), body),  # db's veth
        raw((KERNEL, 0, 0, 0, 0, 0), body),
        raw((TASK, 7, 201, 101, 301, 0), body[:3]),  # short: padded
    ]


def as_ring_run(records: list[bytes], filler: bytes = b"\0") -> RecordRun:
    """The records as a ring's run: each behind its 8-byte header, at one stride, its span
    padded with ``filler`` (a ring's padding holds whatever it held before)."""
    span = record_span(len(records[0]))
    run = b"".join(
        (len(r).to_bytes(4, "little") + bytes(4) + r).ljust(span, filler) for r in records
    )
    return RecordRun(run, len(records), RING_HEADER, len(records[0]))


def events(records: list[Record]) -> list[Event]:
    return [r for r in records if isinstance(r, Event)]


def reference(world: World, fields: list[Field], batch: list[bytes]) -> list[Record]:
    """What the reader did before the fast path: every record through ``place``."""
    decoder = build_decoder(fields)
    out: list[Record] = []
    for one in batch:
        origin = Origin.of(one)
        data = decoder.decode(one, HEADER)
        verdict, _key, container = place(world, origin, data, 0.0)
        if verdict is Verdict.DELIVER:
            out.append(
                Event(
                    "g",
                    "events",
                    "prog",
                    data,
                    None if container is None else world.container_json(container),
                    origin.to_json(world.host_netns, world.host_ifindexes),
                )
            )
    return out


@pytest.mark.parametrize("fields", [PLAIN, NAMING], ids=["plain", "naming fields"])
@pytest.mark.parametrize("select", [(), ("name=web",)], ids=["everything", "selection"])
def test_the_fast_path_names_records_as_placement_does(
    fields: list[Field], select: tuple[str, ...]
) -> None:
    world = make_world(*select)
    batch = batch_for(fields)
    namer = MapNamer("g", "events", "prog", build_decoder(fields), world)
    got = namer.name(batch, 0.0, Held(), MapStats())
    expected = reference(world, fields, batch)
    assert got == expected
    assert len(got) >= 2
    containers = [e.container["name"] if e.container else None for e in events(got)]
    if not select and fields is PLAIN:
        assert containers == ["web", "db", None, None, "db", None, "web"]


def test_a_selection_drops_and_counts_what_is_not_selected() -> None:
    world = make_world("name=web")
    stats = MapStats()
    namer = MapNamer("g", "events", "prog", build_decoder(PLAIN), world)
    got = namer.name(batch_for(PLAIN), 0.0, Held(), stats)
    assert [e.container["name"] for e in events(got) if e.container] == ["web", "web"]
    assert stats.unselected >= 1


@pytest.mark.parametrize("fields", [PLAIN, NAMING], ids=["plain", "naming fields"])
@pytest.mark.parametrize("skip", [8, 12], ids=["ring buffer", "perf buffer"])
@pytest.mark.parametrize("select", [(), ("name=web",)], ids=["everything", "selection"])
def test_a_run_is_named_as_its_records_are(
    fields: list[Field], skip: int, select: tuple[str, ...]
) -> None:
    """``name_run`` (a buffer's run of one size, unpacked in one pass) gives what ``name``
    gives for the same records, each cut from the run as a reader would; consecutive
    records of one task stay one ``EventRun`` whose events are those same events."""
    world = make_world(*select)
    namer = MapNamer("g", "events", "prog", build_decoder(fields), world)
    batch = batch_for(fields)
    full = [r for r in batch if len(r) == len(batch[0])]
    stride = (skip + len(full[0]) + 7) & ~7
    # Each record three times in a row (a task's run), then all of them once more.
    spans = [b"\xff" * skip + r + b"\0" * (stride - skip - len(r)) for r in full for _ in "abc"]
    spans += spans[::3]
    run = RecordRun(b"".join(spans), len(spans), skip, len(full[0]))
    got = namer.name_run(run, 0.0, Held(), MapStats())
    expected = namer.name([s[skip:] for s in spans], 0.0, Held(), MapStats())
    assert made(got) == expected
    assert len(events(expected)) == (1 if select else len(full)) * 4
    runs = [len(r) for r in got if isinstance(r, EventRun)]
    if select or fields is NAMING:  # every record through place, or its own fields read
        assert runs == []
    else:
        assert runs == [3, 3, 3, 3, 1, 1, 1, 1]


# 28 bytes: with the origin header, a record of 60 in a span of 72.
SHORT = [
    Field("pid", "u32"),
    Field("comm", "char[16]"),
    Field("extra", "u32"),
    Field("more", "u32"),
]


def short_records(cut: int) -> list[bytes]:
    """Three records of one task, ``cut`` bytes shorter than the struct: in a span of 72 bytes
    (cut 1: a run's own layout fits) or of 64 (6, 10: it does not)."""
    body = struct.pack("<I16sII", 7, b"sh", 0x01020304, 0x05060708)[:-cut]
    return [raw((TASK, 7, 201, 101, 301, 0), body)] * 3


@pytest.mark.parametrize("cut", [1, 6, 10])
def test_a_short_record_in_a_ring_run_has_zeros_past_its_end_not_the_rings_old_bytes(
    cut: int,
) -> None:
    """A ring pads each record's span to 8 bytes with whatever it held there before; a record
    shorter than its struct is read as zeros past its end, as ``RingReader.read`` gives it to
    ``name`` (found: the run path decoded the padding's old bytes as the last fields)."""
    namer = MapNamer("g", "events", "prog", build_decoder(SHORT), make_world())
    records = short_records(cut)
    got = namer.name_run(as_ring_run(records, b"\xab"), 0.0, Held(), MapStats())
    expected = namer.name(records, 0.0, Held(), MapStats())
    assert made(got) == expected and len(expected) == 3
    assert all(0xAB not in e.data["more"].to_bytes(4, "little") for e in events(expected))
