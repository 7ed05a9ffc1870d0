"""Interface changes in this netns, as they happen: rtnetlink's RTMGRP_LINK.

A container's netns is often seen before the runtime has moved its end of the veth pair into
it. The host-side end changes when that happens (it gets its peer's netns id), so waiting for
the next link change, instead of sleeping, lets classifiers attach the moment the veth is in.
"""

from __future__ import annotations

import socket

import trio

RTMGRP_LINK = 0x1


class LinkWatcher:
    """Sets ``changed`` (then replaces it) whenever an interface of this netns changes."""

    def __init__(self) -> None:
        self._sock = socket.socket(
            socket.AF_NETLINK,
            socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
            socket.NETLINK_ROUTE,
        )
        try:
            self._sock.bind((0, RTMGRP_LINK))
        except BaseException:
            self._sock.close()
            raise
        self.changed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Until cancelled; closes the socket when done."""
        with self._sock:
            task_status.started()
            while True:
                await trio.lowlevel.wait_readable(self._sock)
                try:
                    while self._sock.recv(65536):
                        pass
                except BlockingIOError:
                    pass
                except OSError:
                    # ENOBUFS: changes were dropped; waking the waiters is all that matters.
                    pass
                changed, self.changed = self.changed, trio.Event()
                changed.set()
