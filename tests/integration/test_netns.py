"""Network namespaces on the real kernel: no leaks from setns, and the live netns list."""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from collections.abc import Iterator

import pytest
import trio

from engine.netns import NetnsHandle, NetnsId, host_netns_id, in_netns, run_in_netns
from engine.records import NetnsAdded, NetnsEvent, NetnsRemoved
from engine.sources.netns import NetnsSource

TEST_IMAGE = os.environ.get("ENGINE_TEST_IMAGE", "engine-test:latest")

pytestmark = pytest.mark.integration


async def sh(*argv: str, check: bool = True) -> str:
    done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=check)
    return done.stdout.decode().strip()


def _thread_netns() -> NetnsId:
    return NetnsId.of_path("/proc/thread-self/ns/net")


@pytest.fixture
def named_netns(root: None) -> Iterator[str]:
    name = f"engine-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield name
    subprocess.run(["ip", "netns", "del", name], check=False)


async def test_in_netns_runs_inside_and_leaks_nowhere(named_netns: str) -> None:
    host = host_netns_id()
    async with NetnsHandle.open(f"/run/netns/{named_netns}") as handle:
        assert handle.id != host
        with trio.fail_after(5):
            for _ in range(20):
                assert await in_netns(handle, _thread_netns) == handle.id
                # trio's reusable worker threads and the trio thread stay in the host netns.
                assert await trio.to_thread.run_sync(_thread_netns) == host
                assert _thread_netns() == host
            assert run_in_netns(handle, _thread_netns) == handle.id
        assert _thread_netns() == host
        threads_before = threading.active_count()
    assert threading.active_count() == threads_before


async def test_in_netns_cancelled_releases_the_result(named_netns: str) -> None:
    released = trio.Event()
    token = trio.lowlevel.current_trio_token()
    fds_before = len(os.listdir("/proc/self/fd"))

    def slow_socket() -> int:
        import time

        time.sleep(0.3)
        return os.open("/dev/null", os.O_RDONLY)

    def release(fd: int) -> None:
        os.close(fd)
        token.run_sync_soon(released.set)

    async with NetnsHandle.open(f"/run/netns/{named_netns}") as handle:
        with trio.move_on_after(0.05):
            await in_netns(handle, slow_socket, release=release)
        with trio.fail_after(5):
            await released.wait()
    assert len(os.listdir("/proc/self/fd")) == fds_before


async def test_in_netns_reports_errors(named_netns: str) -> None:
    def boom() -> None:
        raise ValueError("inside")

    async with NetnsHandle.open(f"/run/netns/{named_netns}") as handle:
        with pytest.raises(ValueError, match="inside"):
            await in_netns(handle, boom)


async def test_handle_never_creates_a_netns(root: None, tmp_path: object) -> None:
    with pytest.raises(FileNotFoundError):
        NetnsHandle.open("/run/netns/engine-test-does-not-exist")
    assert not await trio.Path("/run/netns/engine-test-does-not-exist").exists()


async def _next_matching(
    receive: trio.MemoryReceiveChannel[NetnsEvent], wanted: type, netns_id: NetnsId | None
) -> NetnsEvent:
    async for event in receive:
        if isinstance(event, wanted) and (netns_id is None or event.netns_id == netns_id):
            return event
    raise AssertionError("source ended")


async def test_source_hands_back_what_exists_at_start(root: None) -> None:
    """The netns that exist at start come back from start(), not through the channel: with
    more of them than the channel has slots, a start that sent them would never return."""
    names = [f"engine-test-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    send, receive = trio.open_memory_channel[NetnsEvent](0)  # nobody reads it
    try:
        for name in names:
            await sh("ip", "netns", "add", name)
        async with trio.open_nursery() as nursery:
            with trio.fail_after(10):
                snapshot = await nursery.start(NetnsSource().run, send)
            assert all(isinstance(r, NetnsAdded) for r in snapshot)
            found = {r.name: r.netns_id for r in snapshot if r.name in names}
            assert found == {n: NetnsId.of_path(f"/run/netns/{n}") for n in names}
            with pytest.raises(trio.WouldBlock):
                receive.receive_nowait()
            nursery.cancel_scope.cancel()
    finally:
        for name in names:
            await sh("ip", "netns", "del", name, check=False)


async def test_source_sees_named_netns_come_and_go(root: None) -> None:
    name = f"engine-test-{uuid.uuid4().hex[:8]}"
    send, receive = trio.open_memory_channel[NetnsEvent](1000)
    source = NetnsSource()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(source.run, send)
            with trio.fail_after(10):
                await sh("ip", "netns", "add", name)
                added = await _next_matching(receive, NetnsAdded, None)
                while not (isinstance(added, NetnsAdded) and added.name == name):
                    added = await _next_matching(receive, NetnsAdded, None)
                assert added.netns_id == NetnsId.of_path(f"/run/netns/{name}")
                await sh("ip", "netns", "del", name)
                await _next_matching(receive, NetnsRemoved, added.netns_id)
            nursery.cancel_scope.cancel()
    finally:
        await sh("ip", "netns", "del", name, check=False)


async def test_source_sees_a_container_netns(docker_daemon: None) -> None:
    name = f"engine-test-{uuid.uuid4().hex[:8]}"
    send, receive = trio.open_memory_channel[NetnsEvent](1000)
    source = NetnsSource()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(source.run, send)
            with trio.fail_after(20):
                await sh("docker", "run", "-d", "--name", name, TEST_IMAGE, "sleep", "600")
                pid = await sh("docker", "inspect", "-f", "{{.State.Pid}}", name)
                netns = NetnsId.of_path(f"/proc/{pid}/ns/net")
                added = await _next_matching(receive, NetnsAdded, netns)
                assert isinstance(added, NetnsAdded)
                assert added.name is None
                await sh("docker", "rm", "-f", name)
                await _next_matching(receive, NetnsRemoved, netns)
            nursery.cancel_scope.cancel()
    finally:
        await sh("docker", "rm", "-f", name, check=False)
