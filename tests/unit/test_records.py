"""The JSON of the engine's records: keys, values and their order are a contract."""

from __future__ import annotations

import errno
import json
from typing import Any

import attrs
import pytest

import engine.records
from engine import (
    AttachFailed,
    Event,
    GadgetFailed,
    NetnsAdded,
    NetnsRemoved,
    ProgramAttached,
    Record,
    SelectionChanged,
)
from engine.errors import AttachError
from engine.netns import NetnsId
from engine.records import new_event

NETNS = NetnsId(4026531993, 4)


def line(record: Record) -> str:
    """What ``engine run`` writes for ``record``: order of keys included."""
    return json.dumps(record.to_json(), default=str)


def test_a_static_attachment_names_its_target_and_no_netns() -> None:
    record = ProgramAttached(gadget="g", program="p", kind="tracepoint", target="sched:x")
    assert line(record) == (
        '{"type": "attached", "gadget": "g", "program": "p", "kind": "tracepoint", '
        '"target": "sched:x", "netns": null, "interface": null, "container": null, '
        '"speculative": false}'
    )


def test_a_per_netns_attachment_names_its_netns_and_latency_and_no_target() -> None:
    record = ProgramAttached(
        gadget="g",
        program="p",
        kind="classifier/ingress",
        netns=NETNS,
        interface="veth1",
        container="web",
        speculative=True,
        latency=0.5,
    )
    assert line(record) == (
        '{"type": "attached", "gadget": "g", "program": "p", "kind": "classifier/ingress", '
        '"netns": 4026531993, "interface": "veth1", "container": "web", "speculative": true, '
        '"latency": 0.5}'
    )
    assert line(record.detached("db")) == (
        '{"type": "detached", "gadget": "g", "program": "p", "kind": "classifier/ingress", '
        '"netns": 4026531993, "interface": "veth1", "container": "db", "speculative": true}'
    )


def test_detached_carries_every_field_of_its_attachment() -> None:
    # ProgramAttached.detached names the fields one by one: one added later must not be lost.
    record = ProgramAttached(
        gadget="g",
        program="p",
        kind="tracepoint",
        target="sched:sched_switch",
        netns=NETNS,
        interface="veth1",
        container="web",
        speculative=True,
    )
    detached = record.detached("db")
    for field in attrs.fields(engine.records.ProgramRecord):
        expected = "db" if field.name == "container" else getattr(record, field.name)
        assert getattr(detached, field.name) == expected, field.name


def test_a_failed_attachment_carries_the_message_and_errno() -> None:
    error = AttachError("p", "no such device", netns="4026531993", errno=errno.ENODEV)
    record = AttachFailed(gadget="g", program="p", kind="socket", netns=NETNS, error=error)
    assert line(record) == (
        '{"type": "attach_failed", "gadget": "g", "program": "p", "kind": "socket", '
        '"netns": 4026531993, "interface": null, "container": null, "speculative": false, '
        '"error": "cannot attach \'p\' in netns 4026531993: no such device (errno 19)", '
        '"errno": 19}'
    )


def test_fields_are_converted_for_json() -> None:
    data: dict[str, Any] = {"pid": 1}
    event = Event("g", "events", None, data)
    out = event.to_json()
    assert out == {
        "type": "event",
        "gadget": "g",
        "source": "events",
        "program": None,
        "data": {"pid": 1},
        "container": None,
        "origin": None,
    }
    assert out["data"] is not data  # a consumer may change what it got
    assert NetnsAdded(NETNS, "/run/netns/a", "a").to_json() == {
        "type": "netns_added",
        "netns": 4026531993,
        "path": "/run/netns/a",
        "name": "a",
    }
    # How long it had existed is the world's to judge, not part of the record's JSON.
    assert "existed" not in NetnsAdded(NETNS, "/proc/1/ns/net", None, existed=9.0).to_json()
    assert NetnsRemoved(NETNS).to_json() == {"type": "netns_removed", "netns": 4026531993}
    changed = SelectionChanged(("name=web",), (), host=False).to_json()
    assert changed == {
        "type": "selection_changed",
        "select": ["name=web"],
        "exclude": [],
        "host": False,
    }
    failed = GadgetFailed.from_error("g", "/g.c", ValueError("bad"))
    assert failed.to_json()["error_type"] == "ValueError"


def test_every_record_type_is_exported_from_engine_with_a_type_of_its_own() -> None:
    def record_types(namespace: dict[str, object]) -> set[type[Record]]:
        return {
            t
            for t in namespace.values()
            if isinstance(t, type) and issubclass(t, Record) and "TYPE" in vars(t)
        }

    defined = record_types(vars(engine.records))
    exported = record_types({name: getattr(engine, name) for name in engine.__all__})
    assert exported == defined
    assert len({t.TYPE for t in defined}) == len(defined) == 20


def test_new_event_makes_what_event_makes() -> None:
    """The readers' fast constructor sets every field, in Event's order."""
    values = ("g", "events", "prog", {"pid": 1}, {"name": "web"}, {"tgid": 1})
    made = new_event(*values)
    assert type(made) is Event
    assert made == Event(*values)
    assert attrs.astuple(made, recurse=False) == values
    assert repr(made) == repr(Event(*values))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        made.gadget = "other"  # type: ignore[misc]
