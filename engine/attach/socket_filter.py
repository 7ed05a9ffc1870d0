"""Socket filters: a raw packet socket inside a netns with the program attached."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from engine.errors import AttachError
from engine.netns import NetnsHandle, call_inside
from engine.netns.worker import Closer

logger = logging.getLogger(__name__)

ETH_P_ALL = 0x0003
SO_ATTACH_BPF = 50


def _open_filtered_socket(prog_fd: int) -> socket.socket:
    """Runs inside the netns: a socket there sees every interface of that netns only."""
    sock = socket.socket(
        socket.AF_PACKET,
        socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
        socket.htons(ETH_P_ALL),
    )
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, prog_fd)
    except BaseException:
        sock.close()
        raise
    return sock


@asynccontextmanager
async def attach_socket_filter(
    prog_fd: int,
    program: str,
    handle: NetnsHandle,
    *,
    closer: Closer | None = None,
) -> AsyncIterator[socket.socket]:
    """Attach a loaded SOCKET_FILTER program to all traffic of the netns of `handle` (the
    socket made inside it on the calling thread, which enters the netns for two calls that
    never block; closed by ``closer``, else here, which waits for an RCU grace period).

    The socket is closed (and the program detached) on exit, also on cancellation.
    Nobody reads the socket: the program's return value is how many bytes to queue, so
    gadgets should return 0 and report through maps.
    """
    # Not on a worker: under churn on a saturated node, the hop there and back cost two
    # scheduling latencies, the larger part of the attach's p99.
    await trio.lowlevel.checkpoint()
    try:
        sock = call_inside(handle, _open_filtered_socket, prog_fd)
    except OSError as exc:
        raise AttachError.from_os(
            program, "cannot open a packet socket", exc, netns=str(handle.id)
        ) from exc
    logger.debug("socket filter %s attached in %s (fd %d)", program, handle.id, sock.fileno())
    try:
        yield sock
    finally:
        with trio.CancelScope(shield=True):
            if closer is not None:
                closer.close_soon(sock)
            else:
                sock.close()
            await trio.lowlevel.checkpoint()
        logger.debug("socket filter %s detached from %s", program, handle.id)
