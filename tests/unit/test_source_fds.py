"""A runtime source's failed call leaves no fd behind for a garbage collection to find."""

from __future__ import annotations

import gc
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests

from engine.sources.docker import DockerSource


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def gc_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.fixture
def stale_socket(tmp_path: Path) -> Iterator[str]:
    """A daemon's socket path that is bound but no longer listened on: each connect fails."""
    path = str(tmp_path / "docker.sock")
    with socket.socket(socket.AF_UNIX) as bound:
        bound.bind(path)
        yield path


async def test_failed_sdk_calls_release_their_socket(gc_off: None, stale_socket: str) -> None:
    client = docker.APIClient(base_url=f"unix://{stale_socket}", version="1.45")
    source = DockerSource()
    try:
        before = open_fds()
        for _ in range(5):
            with pytest.raises(requests.exceptions.ConnectionError):
                await source._blocking(client.inspect_container, "abc")
        assert open_fds() == before
    finally:
        client.close()


def test_without_the_release_the_sdk_holds_the_socket(gc_off: None, stale_socket: str) -> None:
    """What the test above guards against: the SDK's own failure keeps its socket open."""
    client = docker.APIClient(base_url=f"unix://{stale_socket}", version="1.45")
    try:
        before = open_fds()
        with pytest.raises(requests.exceptions.ConnectionError):
            client.inspect_container("abc")
        assert open_fds() == before + 1
        gc.collect()
        assert open_fds() == before
    finally:
        client.close()
