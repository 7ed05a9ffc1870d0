"""Columnar batches carry the values, origins and containers the per-record events carry."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from engine.events.batches import Batch, BatchMaker
from engine.events.decode import Field, build_decoder
from engine.events.naming import MapNamer
from engine.events.stats import MapStats
from engine.world.held import Held
from tests.unit.test_naming import (
    NAMING,
    PLAIN,
    SHORT,
    as_ring_run,
    batch_for,
    events,
    make_world,
    short_records,
)


def row(batch: Batch, i: int) -> dict[str, Any]:
    """Row ``i`` in events()' terms: what a user's code would make of the columns."""
    out: dict[str, Any] = {}
    for name in batch.fields.dtype.names or ():
        value = batch.fields[name][i]
        if isinstance(value, bytes):
            out[name] = value.decode("utf-8", "replace")
        elif isinstance(value, np.ndarray):
            out[name] = value.tolist()
        else:
            out[name] = value.item()
    return out


@pytest.mark.parametrize("fields", [PLAIN, NAMING], ids=["plain", "naming fields"])
@pytest.mark.parametrize("select", [(), ("name=web",)], ids=["everything", "selection"])
@pytest.mark.parametrize("layout", ["ring run", "records"])
def test_a_batch_holds_what_the_events_hold(
    fields: list[Field], select: tuple[str, ...], layout: str
) -> None:
    world = make_world(*select)
    records = batch_for(fields)
    if layout == "ring run":
        records = [r for r in records if len(r) == len(records[0])]  # a run has one length
    decoder = build_decoder(fields)
    namer = MapNamer("g", "events", "prog", decoder, world)
    expected = events(namer.name(records, 0.0, Held(), MapStats()))
    maker = BatchMaker(namer)
    if layout == "ring run":
        batch = maker.from_run(as_ring_run(records), 0.0, Held(), MapStats())
    else:
        batch = maker.from_records(records, 0.0, Held(), MapStats())
    assert batch is not None
    assert len(batch) == len(expected) >= 1
    assert [row(batch, i) for i in range(len(batch))] == [e.data for e in expected]
    assert [batch.container_of(i) for i in range(len(batch))] == [e.container for e in expected]
    origins = [
        {k: int(batch.origin[k][i]) for k in e.origin}
        for i, e in enumerate(expected)
        if e.origin and "tgid" in e.origin
    ]
    assert origins == [e.origin for e in expected if e.origin and "tgid" in e.origin]
    assert not batch.fields.flags.writeable  # shared by every consumer


@pytest.mark.parametrize("cut", [1, 6, 10])
def test_a_short_record_in_a_ring_run_has_zeros_past_its_end_not_the_rings_old_bytes(
    cut: int,
) -> None:
    """As test_naming's: a batch of a ring's run of short records holds what a batch of the
    records that ``RingReader.read`` gives holds (found: the span's old bytes were in it)."""
    records = short_records(cut)
    maker = BatchMaker(MapNamer("g", "events", "prog", build_decoder(SHORT), make_world()))
    batch = maker.from_run(as_ring_run(records, b"\xab"), 0.0, Held(), MapStats())
    expected = maker.from_records(records, 0.0, Held(), MapStats())
    assert batch is not None and expected is not None and len(batch) == 3
    assert [row(batch, i) for i in range(3)] == [row(expected, i) for i in range(3)]
    assert b"\xab" not in batch.fields.tobytes()
