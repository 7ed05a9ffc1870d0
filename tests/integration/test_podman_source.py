"""podman's containers through its API service (scripts/start-podman), followed by the Docker
source: reported with runtime "podman", and nothing lost across a restart of the service."""

from __future__ import annotations

import os

import pytest
import trio

from engine.records import SourceDisconnected, SourceReconnected
from engine.sources.podman import podman_source
from tests.support.runtimes import Podman, start_podman_service, stop_podman_service
from tests.support.sources import added, removed, running

pytestmark = [pytest.mark.integration, pytest.mark.runtimes]


async def test_podman_containers_have_runtime_podman(podman_containers: Podman) -> None:
    before = await trio.to_thread.run_sync(podman_containers.run, "before")
    async with running(podman_source(), buffer=256) as records:
        assert before in added(records.snapshot)
        listed = added(records.seen)[before]
        assert listed.runtime == "podman" and listed.to_json()["runtime"] == "podman"
        assert listed.name == podman_containers.prefix + "before"
        assert "k8s" not in listed.to_json()
        # podman's netns files are named ones.
        assert listed.netns_path is not None and listed.netns_path.startswith("/run/netns/")
        assert os.stat(listed.netns_path).st_ino == listed.netns_inode
        assert listed.netns_inode == os.stat(f"/proc/{listed.pid}/ns/net").st_ino
        assert listed.mntns_inode == os.stat(f"/proc/{listed.pid}/ns/mnt").st_ino

        after = await trio.to_thread.run_sync(podman_containers.run, "after")
        await records.until(lambda: after in added(records.seen), 10, "after added")
        assert added(records.seen)[after].runtime == "podman"
        await trio.to_thread.run_sync(podman_containers.remove, "after")
        await records.until(lambda: after in removed(records.seen), 10, "after removed")


async def test_a_restart_of_the_service_loses_nothing(podman_containers: Podman) -> None:
    """podman runs without its service: what changed while it was away is reported after."""
    gone = await trio.to_thread.run_sync(podman_containers.run, "gone")
    source = podman_source()
    source.min_backoff = 0.05
    try:
        async with running(source, buffer=256) as records:
            assert gone in added(records.snapshot)
            await trio.to_thread.run_sync(stop_podman_service)
            await records.until_seen(SourceDisconnected)
            new = await trio.to_thread.run_sync(podman_containers.run, "new")
            await trio.to_thread.run_sync(podman_containers.remove, "gone")
            await trio.to_thread.run_sync(start_podman_service)
            await records.until_seen(SourceReconnected)
            gap = records.since_gap()
            assert set(removed(gap)) == {gone}
            assert set(added(gap)) == {new}
            assert isinstance(gap[-1], SourceReconnected)
    finally:
        start_podman_service()
