"""RingReader over anonymous memory laid out like a kernel ring buffer map (no root needed)."""

from __future__ import annotations

import mmap
import struct

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
