"""PerfReader over anonymous memory laid out like a perf event's ring (no root needed)."""

from __future__ import annotations

import mmap
import struct

from engine.events.perfbuf import HEAD, RECORD_SAMPLE, SAMPLE_HEADER, TAIL, PerfReader

SIZE = 4096
PAGE = mmap.PAGESIZE
RECORD_LOST = 2


class FakePerf:
    """Plays the kernel: writes samples (wrapping around the data area) and data_head."""

    def __init__(self) -> None:
        self.memory = mmap.mmap(-1, PAGE + SIZE)
        self.head = 0
        self.reader = PerfReader(-1, self.memory, PAGE, SIZE)

    def _write(self, data: bytes) -> None:
        for i, byte in enumerate(data):
            self.memory[PAGE + (self.head + i) % SIZE] = byte
        self.head += len(data)
        struct.pack_into("<Q", self.memory, HEAD, self.head)

    def sample(self, raw: bytes) -> None:
        raw = raw.ljust((len(raw) + 4 + 7) // 8 * 8 - 4, b"\0")  # the kernel pads to 8
        self._write(
            struct.pack("<IHHI", RECORD_SAMPLE, 0, SAMPLE_HEADER + len(raw), len(raw)) + raw
        )

    def lost(self, count: int) -> None:
        self._write(struct.pack("<IHHQQ", RECORD_LOST, 0, 24, 1, count))

    def tail(self) -> int:
        value: int = struct.unpack_from("<Q", self.memory, TAIL)[0]
        return value


def test_samples_are_read_in_order_across_the_end_and_lost_records_skipped() -> None:
    perf = FakePerf()
    perf.head = SIZE - 20  # the next record wraps around the end of the data area
    struct.pack_into("<Q", perf.memory, TAIL, perf.head)
    perf.sample(b"a" * 28)
    perf.lost(3)
    perf.sample(b"b" * 12)
    assert perf.reader.read(10) == [b"a" * 28, b"b" * 12]
    assert perf.tail() == perf.head
    assert perf.reader.read(10) == []


def test_a_run_of_one_size_stops_at_another_record_and_at_the_end_of_the_area() -> None:
    perf = FakePerf()
    for n in range(3):
        perf.sample(bytes([n]) * 20)
    perf.lost(1)
    perf.sample(b"z" * 20)
    run = perf.reader.read_run(100)
    assert run is not None and (run.count, run.skip) == (3, SAMPLE_HEADER)
    assert run.length == 20  # the raw data's size, as read() gives it
    stride = len(run.data) // run.count
    assert [run.data[i * stride + SAMPLE_HEADER :][:20] for i in range(3)] == [
        bytes([n]) * 20 for n in range(3)
    ]
    # Loss reports in front of a run are passed over (the kernel writes one wherever space
    # is freed once the buffer was full): the run goes on after them.
    perf.lost(2)
    perf.sample(b"y" * 20)
    for expected in (b"z", b"y"):  # each run stops at the next loss report
        run = perf.reader.read_run(100)
        assert run is not None and run.count == 1
        assert run.data[SAMPLE_HEADER:][:20] == expected * 20
    assert perf.reader.read_run(100) is None
    perf.lost(4)
    assert perf.reader.read_run(100) is None  # nothing but a loss report: passed over
    assert perf.tail() == perf.head
    # Near the end of the area a run stops there; the rest comes in the next one.
    perf = FakePerf()
    perf.head = SIZE - 64
    struct.pack_into("<Q", perf.memory, TAIL, perf.head)
    for n in range(4):
        perf.sample(bytes([n]) * 20)  # 32 bytes each: two fit before the end
    first = perf.reader.read_run(100)
    second = perf.reader.read_run(100)
    assert first is not None and second is not None
    assert (first.count, second.count) == (2, 2)
    assert perf.tail() == perf.head
