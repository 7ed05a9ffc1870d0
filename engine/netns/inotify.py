"""A minimal inotify watcher read from trio (libc has the calls; Python has no binding)."""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Iterator

import attrs
import trio

IN_CREATE = 0x100
IN_DELETE = 0x200
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_DELETE_SELF = 0x400
IN_IGNORED = 0x8000
IN_Q_OVERFLOW = 0x4000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("=iIII")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_init1.restype = ctypes.c_int
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.inotify_add_watch.restype = ctypes.c_int


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


@attrs.frozen
class InotifyEvent:
    directory: str
    name: str
    mask: int


class Inotify:
    def __init__(self) -> None:
        self._fd = _check(_libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC), "inotify_init1")
        self._dirs: dict[int, str] = {}

    def watch(self, directory: str, mask: int) -> None:
        wd = _check(
            _libc.inotify_add_watch(self._fd, os.fsencode(directory), mask), "inotify_add_watch"
        )
        self._dirs[wd] = directory

    def close(self) -> None:
        """Idempotent."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def fileno(self) -> int:
        return self._fd

    def read_nowait(self) -> list[InotifyEvent]:
        """The events waiting; raises BlockingIOError when none is."""
        return list(self._parse(os.read(self._fd, 65536)))

    async def read(self) -> list[InotifyEvent]:
        while True:
            try:
                return self.read_nowait()
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._fd)

    def _parse(self, buf: bytes) -> Iterator[InotifyEvent]:
        offset = 0
        while offset + _EVENT.size <= len(buf):
            wd, mask, _cookie, length = _EVENT.unpack_from(buf, offset)
            raw = buf[offset + _EVENT.size : offset + _EVENT.size + length]
            offset += _EVENT.size + length
            name = os.fsdecode(raw.rstrip(b"\0"))
            yield InotifyEvent(directory=self._dirs.get(wd, ""), name=name, mask=mask)
