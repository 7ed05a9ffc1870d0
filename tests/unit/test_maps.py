"""Maps as output without the kernel: decoding by bcc's type descriptions, per-CPU sums,
histogram buckets, the record's JSON and the histogram drawn as bcc draws it."""

from __future__ import annotations

import contextlib
import io
import struct

import pytest

from engine.cli.histogram import log2_lines, map_lines
from engine.cli.table import LiveTable
from engine.events.maps import _summed, decoder_of, histogram_entries
from engine.gadget.maps import histogram_maps
from engine.gadget.model import Gadget
from engine.records import MapSnapshot
from tests.support.requirements import unavailable


def test_scalars_and_flat_structs_decode_by_the_event_rules() -> None:
    assert decoder_of("unsigned int")(struct.pack("<I", 7)) == 7
    assert decoder_of("unsigned long long")(struct.pack("<Q", 2**40)) == 2**40
    desc = [
        "key_t",
        [
            ["pid", "unsigned int"],
            ["saddr", "unsigned int"],
            ["comm", "char", [12]],
            ["__pad_1", "char", [4]],  # padding as bcc describes it: left out
            ["slot", "unsigned long long"],
        ],
        "struct",
    ]
    raw = struct.pack("<I4s12s4xQ", 42, bytes([10, 0, 0, 1]), b"sh\0junk", 3)
    assert decoder_of(desc)(raw) == {"pid": 42, "saddr": "10.0.0.1", "comm": "sh", "slot": 3}


def test_nested_structs_and_unions_decode_through_ctypes() -> None:
    try:
        import bcc  # noqa: F401
    except ImportError:
        unavailable("needs bcc (python3-bpfcc)")
    desc = [
        "outer",
        [
            ["inner", [["a", "unsigned int"], ["b", "unsigned short"]], "struct"],
            ["tag", "char", [4]],
            ["", [["x", "unsigned int"], ["y", "int"]], "union"],
        ],
        "struct",
    ]
    raw = struct.pack("<IH2x4sI", 1, 2, b"ab\0\0", 9)
    assert decoder_of(desc)(raw) == {"inner": {"a": 1, "b": 2}, "tag": "ab", "x": 9, "y": 9}


def test_per_cpu_values_are_summed() -> None:
    assert _summed([1, 2, 3]) == 6
    assert _summed([{"count": 1, "comm": "a"}, {"count": 4, "comm": "b"}]) == {
        "count": 5,
        "comm": "a",
    }


def test_histogram_sections_and_buckets() -> None:
    plain = histogram_entries([(1, 3), (3, 1), (4, 2)])
    assert plain == [
        {
            "key": None,
            "value": [
                {"low": 0, "high": 1, "count": 3},
                {"low": 2, "high": 3, "count": 0},
                {"low": 4, "high": 7, "count": 1},
                {"low": 8, "high": 15, "count": 2},
            ],
        }
    ]
    by_pid = histogram_entries([({"id": 7, "slot": 2}, 5), ({"id": 3, "slot": 1}, 1)])
    assert [(s["key"], [b["count"] for b in s["value"]]) for s in by_pid] == [
        ({"id": 3}, [1]),
        ({"id": 7}, [0, 5]),
    ]


def test_histogram_maps_are_found_in_the_source() -> None:
    gadget = Gadget.from_source(
        "BPF_HISTOGRAM(dist);\nBPF_HISTOGRAM(by_pid, pid_key_t, 128);\n"
        'BPF_TABLE("histogram", int, u64, raw, 64);\nBPF_HASH(counts, u32);\n'
        "// BPF_HISTOGRAM(commented);\n"
        "TRACEPOINT_PROBE(sched, sched_switch) { return 0; }\n"
    )
    assert histogram_maps(gadget) == {"dist", "by_pid", "raw"}


def test_the_record_is_a_json_line_of_its_entries() -> None:
    record = MapSnapshot("syscount", "data", "hash", ({"key": 39, "value": 5},))
    assert record.to_json() == {
        "type": "map",
        "gadget": "syscount",
        "map": "data",
        "kind": "hash",
        "entries": [{"key": 39, "value": 5}],
    }


@pytest.mark.parametrize("counts", [[0, 3, 0, 1, 2], [0, 1] + [0] * 34 + [7]])
def test_histogram_drawn_as_bcc_draws_it(counts: list[int]) -> None:
    try:
        from bcc.table import _print_log2_hist
    except ImportError:
        unavailable("needs bcc (python3-bpfcc)")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        _print_log2_hist(counts, "usecs", False)
    (section,) = histogram_entries([(slot, n) for slot, n in enumerate(counts) if n])
    assert log2_lines(section["value"], "usecs") == printed.getvalue().splitlines()


def test_the_live_view_shows_the_latest_record_of_each_map() -> None:
    table = LiveTable("t", clock=lambda: 0.0)
    table.observe(MapSnapshot("g", "data", "hash", ({"key": 1, "value": 2},)).to_json())
    histogram = histogram_entries([(1, 4), (2, 2)])
    table.observe(MapSnapshot("g", "dist", "log2_histogram", tuple(histogram)).to_json())
    lines = table.render(200, 60)
    assert "MAP g/data" in lines
    assert "MAP g/dist" in lines
    assert lines[lines.index("MAP g/dist") + 2].startswith("         0 -> 1          : 4")
    assert map_lines({"kind": "hash", "entries": [{"key": {"pid": 1}, "value": 3}]}) == [
        "pid=1" + " " * 36 + "3"
    ]
