"""Wake up when the mount table changes (how a named netns's bind mount is noticed).

/proc/self/mountinfo reports a change as EPOLLPRI but is always "readable", so trio's
`wait_readable` on it would spin; a private epoll set listening only for EPOLLPRI is itself
readable exactly when the table changed, and trio can wait on that.
"""

from __future__ import annotations

import os
import select

import trio


class MountWatcher:
    def __init__(self) -> None:
        self._file = os.open("/proc/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._epoll = select.epoll()
        except BaseException:
            os.close(self._file)
            raise
        try:
            self._epoll.register(self._file, select.EPOLLPRI)
            # The first poll reports the table as changed: take that in now.
            self._epoll.poll(0)
        except BaseException:
            self.close()
            raise

    async def changed(self) -> None:
        await trio.lowlevel.wait_readable(self._epoll.fileno())
        self._epoll.poll(0)

    def close(self) -> None:
        """Idempotent."""
        if not self._epoll.closed:
            self._epoll.close()
            os.close(self._file)
