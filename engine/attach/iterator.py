"""BPF iterators (iter/tcp, iter/udp...) run inside a netns.

The kernel binds a tcp/udp iterator to the netns of the process that creates its read fd
(bpf_iter_create), not to the link's. So the link can be made once per program, on the host,
and only the read fd is created inside each netns: an `IterLink` is meant to live as long as the
engine runs the gadget; a bare program fd gets a link for the one call.

A socket iterator walks the kernel's whole socket hash table, whatever the netns: ~3 ms of CPU
per run here, the largest part of attaching a new netns under churn. The kernel counts each
netns's hashed sockets (/proc/net/sockstat, sockstat6), so a run in a netns that has none of
the iterator's kind (a netns seen within milliseconds of its creation, nearly always) is left
out when the caller names the target: it would visit no socket.
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
            raise AttachError.from_os(program, "cannot attach the iterator", exc) from exc
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


# The sockstat lines and fields that count, per netns, the sockets an iterator visits: those
# in the kernel's hash tables (TIME_WAIT apart for TCP; a request socket needs a listener).
_COUNTED = {
    "tcp": (("TCP:", "inuse"), ("TCP:", "tw"), ("TCP6:", "inuse")),
    "udp": (("UDP:", "inuse"), ("UDPLITE:", "inuse"), ("UDP6:", "inuse"), ("UDPLITE6:", "inuse")),
}


def has_sockets(target: str) -> bool:
    """Inside the netns (blocking): whether it has a socket an iterator of ``target`` would
    visit; True when the counts cannot say."""
    wanted = _COUNTED.get(target)
    if wanted is None:
        return True
    counts: dict[tuple[str, str], str] = {}
    for name in ("sockstat", "sockstat6"):
        try:
            with open(f"/proc/thread-self/net/{name}") as f:
                lines = f.read().splitlines()
        except OSError:
            return True
        for label, *fields in (line.split() for line in lines if line.strip()):
            # "TCP: inuse 0 orphan 0 tw 0 alloc 0 mem 0": names and values in turn.
            counts.update(zip(((label, k) for k in fields[::2]), fields[1::2], strict=False))
    return any(counts.get(key, "?") != "0" for key in wanted)


def _read_and_close_link(link_fd: int, target: str | None = None) -> bytes:
    try:
        return read_iterator(link_fd) if target is None or has_sockets(target) else b""
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
    target: str | None = None,
) -> bytes:
    """Everything the iterator writes when read inside the netns of `handle`, to EOF (on
    ``worker``, else on a thread of its own); nothing, without a run, when ``target`` (tcp,
    udp) is given and the netns has no such socket."""
    name = program or (prog.program if isinstance(prog, IterLink) else f"prog fd {prog}")
    try:
        if isinstance(prog, IterLink):
            # A private copy: the thread may outlive a cancelled caller and the link's owner.
            link_fd = os.dup(prog.fd)
            return await in_netns(handle, _read_and_close_link, link_fd, target, worker=worker)
        return await in_netns(handle, _attach_and_read, prog, worker=worker)
    except OSError as exc:
        raise AttachError.from_os(
            name, "cannot run the iterator", exc, netns=str(handle.id)
        ) from exc
