"""Shared fixtures: requirements that fail under CI=true and skip elsewhere, test containers."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.docker import Containers, orphan_shims, remove_orphans, start_dockerd
from tests.support.kernel_state import KernelState
from tests.support.leaks import assert_nothing_left
from tests.support.requirements import require_docker, require_root


@pytest.fixture
def root() -> None:
    """The test needs root, tracefs and bcc."""
    require_root()


@pytest.fixture
def docker_daemon(root: None) -> None:
    """The test needs the local Docker daemon and the test image."""
    require_docker()


@pytest.fixture
def containers(docker_daemon: None) -> Iterator[Containers]:
    """This test's containers: named after a tag of its own, all removed after it."""
    made = Containers()
    before = KernelState.now()
    try:
        yield made
        assert_nothing_left(before, "while the test's containers still ran")
    finally:
        made.remove_all()


@pytest.fixture
def restores_dockerd(containers: Containers) -> Iterator[None]:
    """Whatever the test did to the daemon, it runs again after the test (and before the
    test's containers are removed: the daemon must answer for that), and the containers it
    was making when the test killed it, which no daemon knows any more, are removed: their
    `runc init` would hold a netns with a port on docker0 for good, and the engines of later
    tests would find that netns (a test of examples/tc_bytes.c once counted an ARP broadcast
    flooded to it)."""
    before = set(orphan_shims())
    try:
        yield
    finally:
        start_dockerd()
        made = set(orphan_shims()) - before
        remove_orphans(made)
        left = made & set(orphan_shims())
        assert not left, f"containers the killed daemon was making could not be removed: {left}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`vmkernel` tests need kprobes/fentry/lsm: they run inside Debian's 6.1 VM.

    scripts/vm-run sets ENGINE_IN_VM=1; tests/vm/test_debian_kernel.py boots the VM once and
    asserts their results on the host. Elsewhere they are deselected (they belong to the VM's
    run, which the host checks), unless ENGINE_RUN_VMKERNEL=1 asks for them on a kernel that
    can: nothing is skipped.
    """
    if os.environ.get("ENGINE_IN_VM") == "1" or os.environ.get("ENGINE_RUN_VMKERNEL") == "1":
        return
    in_vm = [item for item in items if item.get_closest_marker("vmkernel") is not None]
    if in_vm:
        config.hook.pytest_deselected(items=in_vm)
        items[:] = [item for item in items if item not in in_vm]
