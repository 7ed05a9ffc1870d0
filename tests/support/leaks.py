"""The check run after every integration and faults test: nothing of ours is left."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.kernel_state import KernelState, left_behind


def assert_nothing_left(before: KernelState, when: str) -> None:
    left = left_behind(before)
    if left:
        pytest.fail(f"left behind {when}:\n{left}", pytrace=False)


@pytest.fixture(autouse=True)
def nothing_left(root: None) -> Iterator[None]:
    """After the test (and its other fixtures): no engine tc filter, BPF program, map or
    link, bcc tracefs probe, or fd of a kind this process did not have before it. The
    ``containers`` fixture checks the same while its containers still live, as a filter on a
    container's veth goes with the container."""
    before = KernelState.now()
    yield
    assert_nothing_left(before, "by the test")
