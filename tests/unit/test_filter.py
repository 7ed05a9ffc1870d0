"""``--filter``: expressions checked against the gadgets' structs before compiling, values
typed by the field, and only matching events reaching the outlet's consumers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import pytest

from engine.errors import FilterError
from engine.events.filter import RecordFilter
from engine.events.outlet import Outlet
from engine.events.queue import RecordQueue
from engine.events.stats import Stats
from engine.gadget.model import Gadget
from engine.gadget.record_structs import buffer_structs
from engine.records import Event, ProgramAttached, Record
from tests.support.constants import EXAMPLES
from tests.support.refusals import refusal

EXECSNOOP = Gadget.from_file(EXAMPLES / "execsnoop.c")
TCPCONNECT = Gadget.from_file(EXAMPLES / "tcpconnect.c")
TC_BYTES = Gadget.from_file(EXAMPLES / "tc_bytes.c")
GADGETS = (EXECSNOOP, TCPCONNECT, TC_BYTES)
# A record typed through a typedef: its struct cannot be read from the source.
HIDDEN = Gadget.from_source(
    "typedef struct { u32 n; } rec_t;\nBPF_PERF_OUTPUT(out);\n"
    'SEC("tracepoint/sched/sched_process_exec")\n'
    "int f(void *ctx) { rec_t r = {}; out.perf_submit(ctx, &r, sizeof(r)); return 0; }",
    "hidden.c",
)


def _exec(container: str | None = "web", **data: Any) -> Event:
    fields = {"pid": 10, "ppid": 1, "uid": 0, "mntns_id": 1, "comm": "sh"}
    box = None if container is None else {"name": container, "image": "busybox"}
    return Event("execsnoop", "events", "trace_execve", {**fields, **data}, box)


def _packet(length: int) -> Event:
    data = {"ifindex": 3, "direction": 0, "len": length, "protocol": 1}
    return Event("tc_bytes", "packets", None, data, None)


def _connection(daddr: str) -> Event:
    return Event("tcpconnect", "connections", None, {"daddr": daddr, "dport": 80}, None)


def _keeps(expressions: list[str], event: Event) -> bool:
    found = RecordFilter.parse(expressions, GADGETS)
    assert found is not None
    return found.keeps(event)


def test_structs_are_read_from_the_source_as_bcc_reports_them() -> None:
    assert buffer_structs(EXECSNOOP) == {
        "events": (
            ("pid", "u32"),
            ("ppid", "u32"),
            ("uid", "u32"),
            ("pad", "u32"),
            ("mntns_id", "u64"),
            ("comm", "char[16]"),
            ("filename", "char[128]"),
        )
    }
    # Submitted from a helper by address: `packets.ringbuf_output(&p, ...)`.
    assert [name for name, _ in buffer_structs(TC_BYTES)["packets"] or ()] == [
        "ifindex",
        "direction",
        "len",
        "protocol",
    ]
    assert buffer_structs(HIDDEN) == {"out": None}


@pytest.mark.parametrize(
    ("expression", "kept", "refused"),
    [
        ("pid==10", _exec(pid=10), _exec(pid=11)),
        ("pid!=10", _exec(pid=11), _exec(pid=10)),
        ("pid<10", _exec(pid=9), _exec(pid=10)),
        ("pid<=10", _exec(pid=10), _exec(pid=11)),
        ("pid>10", _exec(pid=11), _exec(pid=10)),
        ("pid>=0x0a", _exec(pid=10), _exec(pid=9)),
        ("comm~^b.sh$", _exec(comm="bash"), _exec(comm="sh")),
        ("comm!~^b", _exec(comm="sh"), _exec(comm="bash")),
        ("comm=='two words'", _exec(comm="two words"), _exec(comm="two")),
        ("comm<m", _exec(comm="bash"), _exec(comm="sh")),
        ("container.name==web", _exec("web"), _exec("db")),
        ("container.name!=web", _exec(None), _exec("web")),
        ("container.image~^busy", _exec("web"), _exec(None)),
        ("gadget==execsnoop", _exec(), _packet(60)),
        ("source!=events", _packet(60), _exec()),
        # An address compares as one: 10.0.0.9 < 10.0.0.10, which text would get wrong.
        ("daddr<10.0.0.10", _connection("10.0.0.9"), _connection("10.0.0.11")),
        ("daddr==10.0.0.1", _connection("10.0.0.1"), _connection("10.0.0.2")),
    ],
)
def test_every_operator_keeps_what_holds(expression: str, kept: Event, refused: Event) -> None:
    assert _keeps([expression], kept)
    assert not _keeps([expression], refused)


def test_all_must_hold_and_a_field_filters_only_the_maps_that_have_it() -> None:
    both = ["len>100", "container.name!=db"]
    assert _keeps(both, _packet(101))
    assert not _keeps(both, _packet(100))
    assert _keeps(both, _exec("web"))  # no `len` in an exec: only the name counts
    assert not _keeps(both, _exec("db"))


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("pidd==3", "unknown field 'pidd'; execsnoop/events has pid, ppid, uid, mntns_id, comm"),
        ("pad==0", "unknown field 'pad'"),  # padding is not in records
        ("pid==abc", "pid is an integer, not 'abc'"),
        ("daddr==::1", "daddr is an IPv4 address"),
        ("daddr<=host", "daddr is an IP address, not 'host'"),
        ("comm~(", "bad regular expression"),
        ("pid=3", "is not FIELD OP VALUE"),
        ("==3", "is not FIELD OP VALUE"),
    ],
)
def test_a_bad_expression_names_itself_and_the_problem(expression: str, problem: str) -> None:
    message = refusal(FilterError, lambda: RecordFilter.parse([expression], GADGETS), expression)
    assert problem in message
    assert "\n" not in message


def test_a_struct_the_source_hides_is_typed_by_its_first_record() -> None:
    found = RecordFilter.parse(["n>=5"], [HIDDEN])  # not known: not refused
    assert found is not None
    assert found.keeps(Event("hidden", "out", None, {"n": 5}))
    assert not found.keeps(Event("hidden", "out", None, {"n": 4}))


@attrs.define
class _Tapped:
    """Stands in for the hooks: what the outlet showed them."""

    records: list[Record] = attrs.Factory(list)

    def dispatch(self, record: Record) -> None:
        self.records.append(record)

    def dispatch_many(self, records: Sequence[Record]) -> None:
        self.records.extend(records)

    def listening(self) -> bool:
        return True


def test_the_outlet_hands_on_only_kept_events_to_hooks_and_the_queue() -> None:
    queue = RecordQueue(16)
    stats = Stats()
    outlet = Outlet(queue, stats)
    found = RecordFilter.parse(["pid>10"], GADGETS)
    assert found is not None
    outlet.keeps = found.keeps
    tapped = _Tapped()
    outlet.tap = tapped
    attached = ProgramAttached(
        gadget="execsnoop", program="trace_execve", kind="tracepoint", target="t"
    )
    outlet.deliver("execsnoop", "events", [_exec(pid=5), _exec(pid=11)])
    assert outlet.put(_exec(pid=3))
    assert outlet.put(attached)  # the engine's own records are never filtered
    got = queue.take_nowait()
    assert got == tapped.records == [_exec(pid=11), attached]
    counts = stats.for_map("execsnoop", "events")
    assert (counts.delivered, counts.filtered) == (1, 2)
