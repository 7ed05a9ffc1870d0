"""The reconciliation diff."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.sources.reconcile import diff


def test_adds_removes_and_updates() -> None:
    result = diff(desired={"a": 1, "b": 2, "c": 3}, actual={"b": 2, "c": 30, "d": 4})
    assert dict(result.to_add) == {"a": 1}
    assert dict(result.to_remove) == {"d": 4}
    assert dict(result.to_update) == {"c": (30, 3)}
    assert not result.empty


def test_equal_mappings_need_nothing() -> None:
    assert diff({"a": 1}, {"a": 1}).empty
    assert diff({}, {}).empty


def test_order_follows_the_inputs() -> None:
    result = diff(desired={"z": 1, "y": 2, "x": 3}, actual={"q": 0, "p": 0})
    assert list(result.to_add) == ["z", "y", "x"]
    assert list(result.to_remove) == ["q", "p"]


maps = st.dictionaries(st.integers(0, 20), st.integers(0, 3), max_size=12)


@given(desired=maps, actual=maps)
def test_applying_the_diff_gives_desired(desired: dict[int, int], actual: dict[int, int]) -> None:
    result = diff(desired, actual)
    patched = {k: v for k, v in actual.items() if k not in result.to_remove}
    patched.update(result.to_add)
    for key, (old, new) in result.to_update.items():
        assert patched[key] == old
        patched[key] = new
    assert patched == desired
    assert diff(desired, patched).empty
