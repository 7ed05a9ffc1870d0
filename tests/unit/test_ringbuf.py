"""RingReader over anonymous memory laid out like a kernel ring buffer map (no root needed)."""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
import time

import pytest

from engine.events.ringbuf import BUSY, DISCARD, HEADER, RingReader, record_span

SIZE = 4096
PAGE = mmap.PAGESIZE


class FakeRing:
    """Plays the kernel's producer: writes records and the producer position."""

    def __init__(self) -> None:
        self.consumer = mmap.mmap(-1, PAGE)
        self.producer = mmap.mmap(-1, PAGE + 2 * SIZE)
        self.position = 0
        self.reader = RingReader(-1, SIZE, self.consumer, self.producer, PAGE)

    def _write(self, offset: int, data: bytes) -> None:
        # The kernel maps the data area twice; here both copies are written by hand.
        for copy in (0, SIZE):
            start = PAGE + copy + offset
            end = min(start + len(data), PAGE + 2 * SIZE)
            self.producer[start:end] = data[: end - start]
        if offset + len(data) > SIZE:
            head = data[SIZE - offset :]
            self.producer[PAGE : PAGE + len(head)] = head

    def submit(self, payload: bytes, flags: int = 0) -> None:
        offset = self.position & (SIZE - 1)
        self._write(offset, struct.pack("<I4x", len(payload) | flags) + payload)
        self.position += record_span(len(payload))
        struct.pack_into("<Q", self.producer, 0, self.position)

    def rewind(self, position: int) -> None:
        """Both positions back to ``position``, the consumer's in one 8-byte store."""
        self.position = position
        struct.pack_into("<Q", self.producer, 0, position)
        view = ctypes.c_uint64.from_buffer(self.consumer, 0)
        view.value = position
        del view

    def consumed(self) -> int:
        value: int = struct.unpack_from("<Q", self.consumer, 0)[0]
        return value


def test_span_is_header_plus_data_rounded_to_eight() -> None:
    assert record_span(0) == HEADER
    assert record_span(1) == 16
    assert record_span(8) == 16
    assert record_span(20) == 32


def test_reads_records_in_order_and_advances_the_consumer() -> None:
    ring = FakeRing()
    ring.submit(b"first")
    ring.submit(b"second record")
    assert ring.reader.read(10) == [b"first", b"second record"]
    assert ring.consumed() == ring.position
    assert ring.reader.read(10) == []


def test_limit_leaves_the_rest_for_the_next_read() -> None:
    ring = FakeRing()
    for i in range(5):
        ring.submit(bytes([i]) * 4)
    assert len(ring.reader.read(2)) == 2
    assert ring.reader.available() == 3 * record_span(4)
    assert ring.reader.read(10) == [bytes([i]) * 4 for i in (2, 3, 4)]


def test_discarded_records_are_skipped_and_busy_ones_stop_the_read() -> None:
    ring = FakeRing()
    ring.submit(b"kept")
    ring.submit(b"dropped", DISCARD)
    ring.submit(b"not yet", BUSY)
    ring.submit(b"after busy")
    assert ring.reader.read(10) == [b"kept"]
    assert ring.consumed() == record_span(4) + record_span(7)


def test_a_record_wrapping_around_the_end_reads_whole() -> None:
    ring = FakeRing()
    filler = b"x" * (SIZE - 24 - HEADER)
    ring.submit(filler)
    assert ring.reader.read(1) == [filler]
    ring.submit(b"w" * 40)  # starts 24 bytes before the end of the data area
    assert ring.reader.read(1) == [b"w" * 40]


def test_size_must_be_a_power_of_two() -> None:
    with pytest.raises(ValueError, match="power of two"):
        RingReader.open(-1, 3000)


# A position just below a carry into the fifth byte: a store written byte by byte passes
# through values far below both the old and the new position (0xffffff00, then ...).
BELOW_CARRY = (1 << 32) - 8


def _watch_for_torn_positions(consumer: mmap.mmap, seconds: float) -> tuple[int, int]:
    """In a child process: read the position as one 8-byte load, over and over, counting the
    reads that saw a value below ``BELOW_CARRY`` (half an old and half a new position); the
    counts come back through a pipe. Returns the child's pid and the pipe's read end."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        view = ctypes.c_uint64.from_buffer(consumer, 0)
        torn = reads = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for _ in range(1000):
                if view.value < BELOW_CARRY:
                    torn += 1
            reads += 1000
        del view
        os.write(write_end, struct.pack("<QQ", torn, reads))
        os._exit(0)
    os.close(write_end)
    return child, read_end


def _collect(child: int, read_end: int) -> tuple[int, int]:
    os.waitpid(child, 0)
    torn, reads = struct.unpack("<QQ", os.read(read_end, 16))
    os.close(read_end)
    return torn, reads


def _cross_the_carry(ring: FakeRing, deadline: float) -> int:
    crossings = 0
    while time.monotonic() < deadline:
        for _ in range(200):
            ring.rewind(BELOW_CARRY)
            ring.submit(b"")
            assert ring.reader.read(1) == [b""]  # the store under test: to 1 << 32
        crossings += 200
    return crossings


def test_the_kernel_never_sees_a_torn_consumer_position() -> None:
    """A process reading the position as the kernel does (one 8-byte load) while the reader
    moves it across a carry into its fifth byte sees only whole old or new positions. The
    same watcher does catch a position written byte by byte (the control below), so a
    reader that stored it so would fail here."""
    ring = FakeRing()
    ring.rewind(BELOW_CARRY)
    child, read_end = _watch_for_torn_positions(ring.consumer, 0.4)
    crossings = _cross_the_carry(ring, time.monotonic() + 0.4)
    torn, reads = _collect(child, read_end)
    assert crossings > 1000 and reads > 100_000
    assert torn == 0


def test_the_watcher_catches_a_position_written_byte_by_byte() -> None:
    consumer = mmap.mmap(-1, PAGE)
    struct.pack_into("<Q", consumer, 0, BELOW_CARRY)
    child, read_end = _watch_for_torn_positions(consumer, 0.4)
    deadline = time.monotonic() + 0.4
    new, old = (1 << 32).to_bytes(8, "little"), BELOW_CARRY.to_bytes(8, "little")
    while time.monotonic() < deadline:
        for value in (new, old):
            for i in range(8):
                consumer[i] = value[i]
    torn, _reads = _collect(child, read_end)
    assert torn > 0


def test_a_run_of_one_length_is_taken_in_one_copy_across_the_wrap() -> None:
    ring = FakeRing()
    ring.rewind(SIZE - 2 * record_span(20))  # the run wraps around the end of the data area
    for n in range(4):
        ring.submit(bytes([n]) * 20)
    ring.submit(b"other length")
    ring.submit(b"x" * 20, DISCARD)
    ring.submit(b"y" * 20)
    run = ring.reader.read_run(100)
    assert run is not None and run.skip == HEADER
    assert run.length == 20  # the record's own length, not its span's
    blob, count = run.data, run.count
    span = record_span(20)
    assert count == 4
    assert [blob[i * span + HEADER : i * span + HEADER + 20] for i in range(4)] == [
        bytes([n]) * 20 for n in range(4)
    ]
    other = ring.reader.read_run(100)  # another length: a run of its own
    assert other is not None and other.count == 1
    assert other.data[HEADER : HEADER + 12] == b"other length"
    assert ring.reader.read_run(100) is None  # discarded first: read() skips it
    assert ring.reader.read(100) == [b"y" * 20]
    assert ring.reader.read_run(100) is None  # nothing waits
    assert ring.consumed() == ring.position


def test_a_run_stops_at_a_busy_record_and_at_the_limit() -> None:
    ring = FakeRing()
    for n in range(3):
        ring.submit(bytes([n]) * 8)
    ring.submit(b"z" * 8, BUSY)
    run = ring.reader.read_run(2)
    assert run is not None and run.count == 2
    run = ring.reader.read_run(10)
    assert run is not None and run.count == 1
    assert ring.reader.read_run(10) is None
    assert ring.consumed() == 3 * record_span(8)
