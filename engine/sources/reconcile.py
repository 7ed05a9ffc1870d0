"""Reconciliation as a pure diff of what should exist against what the engine believes.

Used as a safety net against missed events (containers, network namespaces): the caller computes
the diff and applies it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Generic, TypeVar

import attrs

K = TypeVar("K")
V = TypeVar("V")


@attrs.frozen
class Diff(Generic[K, V]):
    """What to do so that `actual` becomes `desired`.

    `to_add` and `to_update` follow the order of `desired`, `to_remove` that of `actual`;
    `to_update` maps a key to its (actual, desired) values.
    """

    to_add: Mapping[K, V]
    to_remove: Mapping[K, V]
    to_update: Mapping[K, tuple[V, V]]

    @property
    def empty(self) -> bool:
        return not (self.to_add or self.to_remove or self.to_update)


def diff(desired: Mapping[K, V], actual: Mapping[K, V]) -> Diff[K, V]:
    """Compare by key, and values with `==`."""
    to_add = {k: v for k, v in desired.items() if k not in actual}
    to_remove = {k: v for k, v in actual.items() if k not in desired}
    to_update = {k: (actual[k], v) for k, v in desired.items() if k in actual and actual[k] != v}
    return Diff(
        to_add=MappingProxyType(to_add),
        to_remove=MappingProxyType(to_remove),
        to_update=MappingProxyType(to_update),
    )
