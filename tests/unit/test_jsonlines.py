"""``engine run --output json``'s batch encoder writes exactly what json.dumps wrote, per record."""

from __future__ import annotations

import errno
import os
import struct
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

import engine.cli.jsonlines
import engine.records
from engine import records
from engine.cli.jsonlines import encode, encode_shown, json_line
from engine.errors import AttachError
from engine.events.decode import Field, RecordDecoder, build_decoder
from engine.events.runs import EventRun, Item, Records, RunMaker, Task, made
from engine.netns import NetnsId
from engine.records import Event, Record
from engine.sources.containers import Container, K8s
from tests.unit.test_decode import EVERY_RULE

NETNS = NetnsId(4026531993, 4)
WEB = Container(
    "a" * 64,
    "web",
    "busybox:latest",
    4242,
    labels=(("app", "web"), ("tier", "front")),
    netns_inode=4026532001,
    mntns_inode=4026532002,
    cgroup_id=9876,
    k8s=K8s("default", "web-0", "uid-1", "web", (("run", "web"),)),
)

# Every decoding rule, so that every kind of value an event holds is encoded.
FIELDS = [*EVERY_RULE, Field("big", "__u128"), Field("delta", "s64")]
DECODER = build_decoder(FIELDS)


def decoded(raw: bytes) -> dict[str, Any]:
    return DECODER.decode(raw.ljust(DECODER.struct.size, b"\0")[: DECODER.struct.size])


def event(data: dict[str, Any], container: Container | None = WEB) -> Event:
    origin = {"mntns": 4026532002, "netns": 4026532001, "cgroup": 9876, "tgid": 4242}
    return Event(
        "flood",
        "events",
        "on_call",
        data,
        None if container is None else container.to_json(),
        origin,
    )


def every_record_type() -> list[Record]:
    error = AttachError("p", "no such device", netns="4026531993", errno=errno.ENODEV)
    attached = records.ProgramAttached(
        gadget="g",
        program="p",
        kind="classifier/ingress",
        netns=NETNS,
        interface="veth1",
        latency=0.0123,
    )
    return [
        event(decoded(bytes(range(200)))),
        records.Lost("g", "events", 3, "engine"),
        records.MapSnapshot(
            "g", "counts", "hash", ({"key": 1, "value": 2, "container": WEB.name},)
        ),
        records.ProgramSkipped("g", "p", "kprobe", "no kprobes"),
        records.GadgetFailed.from_error("g", "/g.c", ValueError("bad")),
        attached,
        attached.detached("db"),
        records.AttachFailed(gadget="g", program="p", kind="socket", netns=NETNS, error=error),
        records.ContainerAdded(WEB),
        records.ContainerRemoved(WEB, "died"),
        records.ContainerPaused(WEB),
        records.ContainerUnpaused(WEB),
        records.ContainerRenamed(WEB, "old"),
        records.SourceConnected("docker", 1700000000.25, "docker"),
        records.SourceDisconnected("docker", 1e16, "gone", "docker"),
        records.SourceReconnected("docker", 1700000000.25, 1700000001.5, "docker"),
        records.NetnsAdded(NETNS, "/run/netns/a", "a"),
        records.NetnsRemoved(NETNS),
        records.HookFailed("h", "ValueError", "bad é", "event"),
        records.SelectionChanged(("name=web",), (), host=False),
    ]


def test_every_record_type_is_written_as_json_dumps_wrote_it() -> None:
    records = every_record_type()
    types = {type(r) for r in records}
    assert len(types) == len(records) == 20  # every type in engine.records, once
    assert all(type(r).__module__ == engine.records.__name__ for r in records)
    assert encode(records) == b"".join(json_line(r) for r in records)
    # One at a time, and interleaved runs of events: the same bytes.
    for record in records:
        assert encode([record]) == json_line(record)
    mixed = [records[0], records[0], records[1], records[0], records[8], records[0]]
    assert encode(mixed) == b"".join(json_line(r) for r in mixed)


def test_events_that_the_fast_encoder_would_write_differently_fall_back() -> None:
    # Non-ASCII (json escapes it), DEL, integers over 64 bits (msgspec refuses them), names
    # with quotes and separators in them, no container, an empty list.
    odd = [
        event({"comm": "caf\u00e9", "pid": 1}),
        event({"comm": "a\x7fb"}),
        event({"big": 2**100}),
        event({'k", "x": {"type": "event", ': '}, {"type": "event", '}, None),
        event({"arr": [], "m": {}}, None),
        event({"neg": -(2**63), "u": 2**64 - 1, "b": False}),
    ]
    for record in odd:
        assert encode([record]) == json_line(record)
    assert encode(odd) == b"".join(json_line(r) for r in odd)


def test_a_string_that_json_writes_but_utf8_cannot_encode_falls_back() -> None:
    # A lone surrogate (os.fsdecode's for a name that is not UTF-8): json escapes it,
    # msgspec refuses it with UnicodeEncodeError.
    odd = [event({"pid": 1}), event({"comm": "sh", "path": "a\udcffb"}), event({"pid": 2})]
    assert encode(odd) == b"".join(json_line(r) for r in odd)
    assert encode_shown([r.to_json() for r in odd]) == encode(odd)
    assert b"\\udcff" in encode(odd)


def test_records_json_objects_already_made_are_written_the_same() -> None:
    # What `engine run` writes when observers (or --fields) made each record's JSON object.
    records = every_record_type()
    odd = [
        event({"comm": "caf\u00e9", "pid": 1}),
        event({"big": 2**100}),
        event({"arr": [], "m": {}}, None),
    ]
    mixed = [records[0], records[0], records[1], *odd, records[8], records[0]]
    for run in (records, mixed, odd):
        assert encode_shown([r.to_json() for r in run]) == encode(run)


@given(st.lists(st.binary(min_size=0, max_size=DECODER.struct.size), min_size=1, max_size=20))
def test_any_decoded_records_are_written_as_json_dumps_wrote_them(raws: list[bytes]) -> None:
    records = [event(decoded(raw), WEB if i % 2 else None) for i, raw in enumerate(raws)]
    assert encode(records) == b"".join(json_line(r) for r in records)


def test_random_structs_with_every_rule_match() -> None:
    size = DECODER.struct.size
    records = [event(decoded(os.urandom(size))) for _ in range(500)]
    records.append(event(decoded(struct.pack("<I", 7))))
    assert encode(records) == b"".join(json_line(r) for r in records)


def test_plain_events_take_the_batch_path(monkeypatch: Any) -> None:
    expected = [json_line(event({"pid": n, "comm": "sh"})) for n in range(3)]

    def refuse(record: Record) -> bytes:
        raise AssertionError("an ASCII event went through json.dumps")

    monkeypatch.setattr(engine.cli.jsonlines, "json_line", refuse)
    assert encode([event({"pid": n, "comm": "sh"}) for n in range(3)]) == b"".join(expected)


# --- runs of one task's events, written from their values (engine/events/runs.py) -------

ODD_FIELDS = [
    Field("flags", "bool[2]"),
    Field("bytes", "u8[4]"),
    Field("name", "char[12]"),
    Field("ipv4", "__be32"),
    Field("big", "__int128"),
]
ODD_NAMES = [b"caf\xc3\xa9", b"a\x7fb", b'"q\\', b"", b"\xff\xfe", b"tab\there", b"\x01"]
ORIGIN = {"mntns": 4026532002, "netns": 4026532001, "cgroup": 9876, "tgid": 4242}
ODD_CONTAINER = Container(
    "c" * 64, 'caf\u00e9 "x"', "img", 1, labels=(("k", "v\u00e9\x7f"),), netns_inode=1
)


def event_run(
    decoder: RecordDecoder, raws: list[bytes], container: Container | None = WEB, **names: Any
) -> EventRun:
    where = {"gadget": "flood", "source": "events", "program": "on_call", **names}
    maker = RunMaker(where["gadget"], where["source"], where["program"], decoder)
    task = Task(ORIGIN, None if container is None else container.to_json())
    size = decoder.struct.size
    spans = b"".join(raw.ljust(size, b"\0")[:size] for raw in raws)
    return EventRun(maker, Records(spans, decoder.struct), task)


def written(items: list[Item]) -> bytes:
    """What json wrote for the records ``items`` stand for."""
    return b"".join(json_line(r) for r in made(items))


def test_a_runs_events_are_the_events_the_record_path_makes() -> None:
    raws = [os.urandom(DECODER.struct.size) for _ in range(5)]
    run = event_run(DECODER, raws)
    assert run.events() == [event(DECODER.decode(raw)) for raw in raws]
    assert len(run) == 5 and len(run.first(2)) == 2 and run.first(2).events() == run.events()[:2]


@given(st.lists(st.binary(min_size=0, max_size=DECODER.struct.size), min_size=1, max_size=20))
def test_a_runs_lines_are_what_json_dumps_wrote(raws: list[bytes]) -> None:
    for container in (WEB, None, ODD_CONTAINER):
        run = event_run(DECODER, raws, container)
        assert encode([run]) == written([run])


def test_every_kind_of_value_and_name_in_a_run_is_written_as_json_dumps_wrote_it() -> None:
    odd = build_decoder(ODD_FIELDS)
    raws = [
        struct.pack("<2?4B12sI16s", i % 2 == 0, True, 0, 255, i, 7, name, 0x0100007F, big)
        for i, name in enumerate(ODD_NAMES)
        for big in (bytes(16), b"\xff" * 16, (2**100).to_bytes(16, "little"))
    ]
    names: list[dict[str, Any]] = [
        {"program": None},
        {"gadget": 'g "quoted" \u00e9', "source": "m\\ap", "program": "{x}"},
    ]
    for where in names:
        run = event_run(odd, raws, ODD_CONTAINER, **where)
        assert encode([run]) == written([run])
        assert encode([run]) == b"".join(json_line(r) for r in run.events())
    assert b"\\u00e9" in encode([run]) and b"\\u007f" in encode([run])


def test_runs_mixed_with_records_and_longer_than_one_piece_keep_their_order() -> None:
    records = every_record_type()
    long = event_run(DECODER, [os.urandom(DECODER.struct.size) for _ in range(300)])
    short = event_run(DECODER, [bytes(DECODER.struct.size)], None)
    items: list[Item] = [records[1], long, records[0], short, long, records[8], short]
    assert encode(items) == written(items)
    assert encode(items).count(b"\n") == len(made(items)) == 605
