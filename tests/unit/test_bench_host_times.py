"""The Docker churn benchmark's host-clock figures: the watcher's lines as the benchmark reads
them (benchmarks/host_watch.py), and the latencies made from them (benchmarks/timeline.py)."""

from __future__ import annotations

import io

import pytest

from benchmarks.host_watch import HostTimes, encode, take
from benchmarks.timeline import Timeline, host_latencies

PATH = "/run/docker/netns/abc"


def test_the_watchers_lines_fill_the_host_times() -> None:
    times = HostTimes()
    lines = encode(
        [
            ["file", PATH, 10.0],
            ["mounted", PATH, 10.002],
            ["bridge", "veth1", 9.5, 7],
            ["filter", 7, 10.01],
            ["file", PATH, 11.0],  # the first time a path is seen is kept
        ]
    )
    take(times, io.BytesIO(lines))
    assert times.netns_files == {PATH: 10.0}
    assert times.netns_mounted == {PATH: 10.002}
    assert times.on_bridge == {"veth1": 9.5}
    assert times.filters_added("veth1", 1) == 10.01
    assert times.filters_added("veth1", 2) is None  # one filter of two so far
    take(times, io.BytesIO(encode([["filter", 7, 10.02]])))
    assert times.filters_added("veth1", 2) == 10.02


def test_socket_attach_counted_from_the_mount_and_from_the_file() -> None:
    timeline = Timeline()
    timeline.note({"type": "netns_added", "netns": 42, "path": PATH}, 10.0)
    for program, at in (("seen_by_socket", 10.005), ("tc_in", 10.006), ("tc_out", 10.007)):
        record = {"type": "attached", "netns": 42, "program": program, "container": "c1"}
        timeline.note({**record, "interface": "veth1"}, at)
    host = HostTimes()
    take(host, io.BytesIO(encode([["file", PATH, 10.0], ["mounted", PATH, 10.003]])))
    found = host_latencies(timeline, host, ["c1"])
    assert found["socket_attach_after_netns_file"]["p50_ms"] == pytest.approx(5.0)
    assert found["socket_attach_after_netns_mounted"]["p50_ms"] == pytest.approx(2.0)
    assert found["netns_file_to_mounted"]["p50_ms"] == pytest.approx(3.0)
    assert found["tc_filters_after_veth_on_bridge"]["n"] == 0  # no filter seen
