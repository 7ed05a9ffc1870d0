"""Identity of a network namespace and an open handle that pins it."""

from __future__ import annotations

import errno
import fcntl
import logging
import os

import attrs
import trio

logger = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
# ioctl(NS_GET_NSTYPE) answers the kind of namespace an nsfs fd refers to.
_NS_GET_NSTYPE = 0xB703


@attrs.frozen
class NetnsId:
    """A network namespace as the kernel names it: the nsfs inode and its device."""

    inode: int
    dev: int

    @classmethod
    def from_stat(cls, st: os.stat_result) -> NetnsId:
        return cls(inode=st.st_ino, dev=st.st_dev)

    @classmethod
    def of_path(cls, path: str) -> NetnsId:
        return cls.from_stat(os.stat(path))

    def __str__(self) -> str:
        return f"net:[{self.inode}]"


def host_netns_id() -> NetnsId:
    """The netns this process runs in (the host's, from the engine's point of view)."""
    return NetnsId.of_path("/proc/self/ns/net")


def is_netns_fd(fd: int) -> bool:
    try:
        return fcntl.ioctl(fd, _NS_GET_NSTYPE) == CLONE_NEWNET
    except OSError:
        return False


def open_netns_fd(path: str, ident: NetnsId) -> int | None:
    """An fd of the netns ``ident`` that ``path`` reaches, if it still does (None if not)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if is_netns_fd(fd) and NetnsId.from_stat(os.fstat(fd)) == ident:
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def reaches(path: str, ident: NetnsId) -> bool:
    try:
        return NetnsId.of_path(path) == ident
    except OSError:
        return False


@attrs.define(eq=False)
class NetnsHandle(trio.abc.AsyncResource):
    """An open fd on a netns; while it is open the netns (and so its inode) cannot go away.

    Use `open()` or `from_pid()`, then `aclose()` (idempotent) or `async with`.
    """

    path: str
    id: NetnsId
    _fd: int | None

    @classmethod
    def open(cls, path: str) -> NetnsHandle:
        """Open the netns at `path`; never creates anything (unlike pyroute2's default)."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        if not is_netns_fd(fd):
            os.close(fd)
            raise OSError(errno.EINVAL, "not a network namespace", path)
        return cls(path=path, id=NetnsId.from_stat(os.fstat(fd)), fd=fd)

    @classmethod
    def from_pid(cls, pid: int) -> NetnsHandle:
        return cls.open(f"/proc/{pid}/ns/net")

    @property
    def fd(self) -> int:
        if self._fd is None:
            raise trio.ClosedResourceError(f"netns handle {self.path} is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd is None

    def dup(self) -> int:
        """A private copy of the fd, for a thread that may outlive this handle's owner."""
        return os.dup(self.fd)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()
