"""Network namespaces on the real kernel: no leaks from setns, and the live netns list."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
import trio

import engine.netns.thread
from engine.attach import attach_socket_filter
from engine.errors import AttachError
from engine.netns import (
    NetnsHandle,
    NetnsId,
    NetnsNotRestoredError,
    call_inside,
    host_netns_id,
    in_netns,
    run_in_netns,
)
from engine.netns.links import RTMGRP_LINK, drop_bridge_family
from engine.netns.netlink import messages, rtnl_socket
from engine.netns.priority import Priority, raised
from engine.netns.worker import Worker, setns_current_thread
from engine.records import NetnsAdded, NetnsEvent, NetnsRemoved
from engine.sources.netns import NetnsSource
from tests.support.commands import arun, run
from tests.support.docker import Containers

pytestmark = pytest.mark.integration


def _thread_netns() -> NetnsId:
    return NetnsId.of_path("/proc/thread-self/ns/net")


@pytest.fixture
def named_netns(root: None) -> Iterator[str]:
    name = f"engine-test-{uuid.uuid4().hex[:8]}"
    run("ip", "netns", "add", name)
    yield name
    run("ip", "netns", "del", name, check=False)


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


async def test_call_inside_runs_inside_and_always_comes_back(named_netns: str) -> None:
    """On the trio thread itself: inside for the call, and home after it whatever failed."""
    home = _thread_netns()
    async with NetnsHandle.open(f"/run/netns/{named_netns}") as handle:
        assert handle.id != home
        for _ in range(20):
            assert call_inside(handle, _thread_netns) == handle.id
            assert _thread_netns() == home

        def boom() -> None:
            raise ValueError("inside")

        with pytest.raises(ValueError, match="inside"):
            call_inside(handle, boom)
        assert _thread_netns() == home
        # A socket filter whose program cannot be attached (not a BPF program's fd).
        not_a_program = os.open("/dev/null", os.O_RDONLY)
        try:
            with pytest.raises(AttachError, match="cannot open a packet socket"):
                async with attach_socket_filter(not_a_program, "bad", handle):
                    pass
        finally:
            os.close(not_a_program)
        assert _thread_netns() == home
    # Entering fails (a namespace of another kind): nothing entered, nothing to undo.
    not_a_netns = NetnsHandle("/proc/self/ns/uts", home, os.open("/proc/self/ns/uts", os.O_RDONLY))
    try:
        with pytest.raises(OSError, match="setns"):
            call_inside(not_a_netns, _thread_netns)
    finally:
        not_a_netns.close()
    assert _thread_netns() == home


async def test_call_inside_that_cannot_come_back_says_so(
    named_netns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The return refused (as ENOMEM would): the caller is told, never left unaware."""
    home_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    calls: list[int] = []

    def refuse_the_return(fd: int) -> None:
        calls.append(fd)
        if len(calls) > 1:
            raise OSError(12, "setns: Cannot allocate memory")
        setns_current_thread(fd)

    monkeypatch.setattr(engine.netns.thread, "setns_current_thread", refuse_the_return)
    try:
        async with NetnsHandle.open(f"/run/netns/{named_netns}") as handle:
            with pytest.raises(NetnsNotRestoredError):
                call_inside(handle, _thread_netns)
            assert _thread_netns() == handle.id
    finally:
        setns_current_thread(home_fd)
        os.close(home_fd)
    assert _thread_netns() == host_netns_id()


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


async def test_attach_priority_is_for_the_attach_path_only(root: None) -> None:
    """The trio thread raised for the block and then as it was; workers on the attach path
    follow it; any other thread it starts begins at nice 0."""
    assert _nice() == 0
    followers = Worker("follows", callers_priority=True)
    others = Worker("others")
    started: list[int] = []
    try:
        with raised(Priority(nice=-7)):
            assert _nice() == -7
            assert await followers.run(_nice) == -7
            assert await others.run(_nice) == 0
            thread = threading.Thread(target=lambda: started.append(_nice()))
            thread.start()
            thread.join()
            assert await trio.to_thread.run_sync(_nice) == 0
        assert _nice() == 0
    finally:
        await followers.join()
        await others.join()
    assert started == [0]


def _policy() -> tuple[int, int]:
    tid = threading.get_native_id()
    policy = os.sched_getscheduler(tid) & ~os.SCHED_RESET_ON_FORK
    return policy, os.sched_getparam(tid).sched_priority


async def test_real_time_attach_path_only(root: None) -> None:
    """``attach_realtime``: the trio thread SCHED_FIFO for the block and then as it was, the
    attach path's workers with it; every other thread it starts is an ordinary one."""
    ordinary, fifo = (os.SCHED_OTHER, 0), (os.SCHED_FIFO, 1)
    assert _policy() == ordinary
    followers = Worker("follows", callers_priority=True)
    others = Worker("others")
    try:
        with raised(Priority(realtime=1)):
            assert _policy() == fifo
            assert await followers.run(_policy) == fifo
            assert await others.run(_policy) == ordinary
            assert await trio.to_thread.run_sync(_policy) == ordinary
        assert _policy() == ordinary
    finally:
        await followers.join()
        await others.join()


def _link_socket() -> socket.socket:
    return rtnl_socket(blocking=False, groups=RTMGRP_LINK)


def _link_families(sock: socket.socket) -> list[tuple[int, int]]:
    """(message type, family) of every link message waiting on ``sock``."""
    out = []
    with contextlib.suppress(BlockingIOError):
        while data := sock.recv(1 << 16):
            out += [(m.kind, m.payload[0]) for m in messages(data) if m.payload]
    return out


async def test_link_watcher_socket_drops_the_bridge_family_only(named_netns: str) -> None:
    # engine/netns/links.py: the classic BPF filter on the link watcher's socket, made in a
    # netns of the test's so that only the test's own links make messages there.
    async with NetnsHandle.open(f"/run/netns/{named_netns}") as handle:
        plain, filtered = (call_inside(handle, _link_socket) for _ in "ab")
    with plain, filtered:
        drop_bridge_family(filtered)
        for command in (
            ("link", "add", "br0", "type", "bridge"),
            ("link", "add", "v0", "type", "veth", "peer", "name", "v1"),
            ("link", "set", "v0", "master", "br0"),
        ):
            await arun("ip", "-n", named_netns, *command)
        everything, kept = _link_families(plain), _link_families(filtered)
    bridge_family = 7
    assert any(family == bridge_family for _, family in everything), everything
    assert kept == [m for m in everything if m[1] != bridge_family]


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


@asynccontextmanager
async def source_events() -> AsyncIterator[trio.MemoryReceiveChannel[NetnsEvent]]:
    """A running NetnsSource's events; stopped when the block ends."""
    send, receive = trio.open_memory_channel[NetnsEvent](1000)
    async with trio.open_nursery() as nursery:
        await nursery.start(NetnsSource().run, send)
        yield receive
        nursery.cancel_scope.cancel()


async def test_source_sees_named_netns_come_and_go(root: None) -> None:
    name = f"engine-test-{uuid.uuid4().hex[:8]}"
    try:
        async with source_events() as receive:
            with trio.fail_after(10):
                await arun("ip", "netns", "add", name)
                added = await _next_matching(receive, NetnsAdded, None)
                while not (isinstance(added, NetnsAdded) and added.name == name):
                    added = await _next_matching(receive, NetnsAdded, None)
                assert added.netns_id == NetnsId.of_path(f"/run/netns/{name}")
                await arun("ip", "netns", "del", name)
                await _next_matching(receive, NetnsRemoved, added.netns_id)
    finally:
        await arun("ip", "netns", "del", name, check=False)


async def test_source_sees_a_container_netns(containers: Containers) -> None:
    async with source_events() as receive:
        with trio.fail_after(20):
            name = await containers.run("netns")
            netns = NetnsId.of_path(f"/proc/{await containers.pid(name)}/ns/net")
            added = await _next_matching(receive, NetnsAdded, netns)
            assert isinstance(added, NetnsAdded)
            assert added.name is None
            await containers.remove(name)
            await _next_matching(receive, NetnsRemoved, netns)
