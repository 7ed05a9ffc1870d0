"""BPF iterators (iter/tcp, iter/udp...) run inside a netns.

The kernel binds a tcp/udp iterator to the netns of the process that creates its read fd
(bpf_iter_create), not to the link's. So the link can be made once per program, on the host,
and only the read fd is created inside each netns: an `IterLink` is meant to live as long as the
engine runs the gadget; a bare program fd gets a link for the one call.
"""

from __future__ import annotations

import ctypes
import os

import attrs
import trio

from engine.bcc import libbcc
from engine.errors import AttachError
from engine.netns import NetnsHandle, in_netns
from engine.netns.worker import Worker


def _check(ret: int, what: str) -> int:
    if ret < 0:
        # libbcc returns -errno, or -1 with errno set.
        err = -ret if ret != -1 else ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


@attrs.define(eq=False)
class IterLink(trio.abc.AsyncResource):
    """A BPF link of an iterator program; `aclose()` is idempotent."""

    program: str
    _fd: int | None

    @classmethod
    def attach(cls, prog_fd: int, program: str) -> IterLink:
        try:
            fd = _attach(prog_fd)
        except OSError as exc:
            raise AttachError(program, "cannot attach the iterator", errno=exc.errno) from exc
        return cls(program=program, fd=fd)

    @property
    def fd(self) -> int:
        if self._fd is None:
            raise trio.ClosedResourceError(f"iterator link of {self.program} is closed")
        return self._fd

    async def aclose(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        await trio.lowlevel.checkpoint()


def read_iterator(link_fd: int) -> bytes:
    """Everything one run of the iterator writes (blocking: run it in a worker thread)."""
    fd = _check(libbcc.lib().bcc_iter_create(link_fd), "bcc_iter_create")
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _read_and_close_link(link_fd: int) -> bytes:
    try:
        return read_iterator(link_fd)
    finally:
        os.close(link_fd)


def _attach_and_read(prog_fd: int) -> bytes:
    return _read_and_close_link(_attach(prog_fd))


def _attach(prog_fd: int) -> int:
    return _check(libbcc.lib().bcc_iter_attach(prog_fd, None, 0), "bcc_iter_attach")


async def run_iter_in_netns(
    prog: int | IterLink,
    handle: NetnsHandle,
    *,
    program: str | None = None,
    worker: Worker | None = None,
) -> bytes:
    """Everything the iterator writes when read inside the netns of `handle`, to EOF (on
    ``worker``, else on a thread of its own)."""
    name = program or (prog.program if isinstance(prog, IterLink) else f"prog fd {prog}")
    try:
        if isinstance(prog, IterLink):
            # A private copy: the thread may outlive a cancelled caller and the link's owner.
            return await in_netns(handle, _read_and_close_link, os.dup(prog.fd), worker=worker)
        return await in_netns(handle, _attach_and_read, prog, worker=worker)
    except OSError as exc:
        raise AttachError(
            name,
            f"cannot run the iterator: {exc.strerror}",
            netns=str(handle.id),
            errno=exc.errno,
        ) from exc
