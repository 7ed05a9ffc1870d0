"""Who may run the engine, and whose code it agrees to run.

Capabilities: the engine loads BPF programs (CAP_BPF), attaches tracing programs and reads
kernel addresses (CAP_PERFMON), adds tc filters (CAP_NET_ADMIN) and enters containers'
namespaces and writes tracefs through bcc (CAP_SYS_ADMIN). They are read from the effective
set in /proc/self/status before anything is compiled, and all missing ones are named at once.
CAP_SYS_NICE is wanted, not required: it raises the attach path's priority
(engine/netns/priority.py); without it that path runs at the default priority.

Trusted files: the engine runs as root and turns gadget and hook files into kernel and Python
code. A file that an unprivileged user can change, or replace through a directory they can
write, would let that user run code as root; such files are refused unless the caller says
otherwise (``--allow-untrusted-files``, ``trust_files=True``). Only root and the engine's own
user count as trusted owners. A sticky directory writable by everyone (/tmp) is accepted when
the entry inside it belongs to a trusted owner: there only an entry's owner may rename or
delete it.
"""

from __future__ import annotations

import enum
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from engine.errors import EnvironmentProblem, MissingCapabilitiesError, UntrustedFileError


class Capability(enum.IntEnum):
    """The capabilities the engine uses, by their bit number in CapEff."""

    CAP_NET_ADMIN = 12
    CAP_SYS_ADMIN = 21
    CAP_SYS_NICE = 23
    CAP_PERFMON = 38
    CAP_BPF = 39


WANTED = (Capability.CAP_SYS_NICE,)
REQUIRED = tuple(c for c in Capability if c not in WANTED)


def effective_capabilities(status: str | None = None) -> int:
    """The CapEff bit mask of this process (from ``status``, the text of /proc/self/status)."""
    if status is None:
        status = Path("/proc/self/status").read_text()
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    raise EnvironmentProblem("no CapEff line in /proc/self/status")


def missing_capabilities(mask: int) -> list[Capability]:
    return [c for c in REQUIRED if not mask >> c.value & 1]


def require_capabilities(status: str | None = None) -> None:
    """Raise ``MissingCapabilitiesError`` naming every capability the engine lacks."""
    missing = missing_capabilities(effective_capabilities(status))
    if missing:
        raise MissingCapabilitiesError(missing, REQUIRED)


def _trusted_owners() -> frozenset[int]:
    return frozenset({0, os.geteuid()})


def _problem(st: os.stat_result, *, is_dir: bool, sticky_ok: bool) -> str | None:
    """Why an entry with this status is not trusted, or None."""
    mode = st.st_mode
    if st.st_uid not in _trusted_owners():
        return f"owned by uid {st.st_uid}"
    writable = mode & (stat.S_IWGRP | stat.S_IWOTH)
    if not writable:
        return None
    if is_dir and sticky_ok and mode & stat.S_ISVTX:
        return None
    who = "others" if mode & stat.S_IWOTH else f"group {st.st_gid}"
    return f"writable by {who} (mode {stat.S_IMODE(mode):04o})"


def _chain(path: Path) -> list[Path]:
    """``path`` and every directory above it, the file first."""
    return [path, *path.parents]


def check_trusted(path: str | Path) -> None:
    """Raise ``UntrustedFileError`` unless only trusted owners can change what ``path`` reads.

    Both the path as written and the path its symbolic links lead to are checked, so that
    neither the file nor any link or directory on the way can be swapped by someone else.
    A missing or unreadable path is left for the reader to report.
    """
    shown = str(path)
    written = Path(os.path.abspath(path))
    resolved = Path(os.path.realpath(path))
    checked: set[Path] = set()
    for chain in (_chain(written), _chain(resolved)):
        # Walk from the root down: the first untrusted directory is the one to report.
        entries = list(reversed(chain))
        for index, entry in enumerate(entries):
            if entry in checked:
                continue
            checked.add(entry)
            try:
                st = entry.lstat()
            except OSError:
                return
            if stat.S_ISLNK(st.st_mode):
                # A link's own mode means nothing; who owns it (and its directory) does.
                problem = None if st.st_uid in _trusted_owners() else f"owned by uid {st.st_uid}"
            else:
                # Below a sticky directory, the entry checked next must be trusted itself.
                has_child = index + 1 < len(entries)
                problem = _problem(st, is_dir=stat.S_ISDIR(st.st_mode), sticky_ok=has_child)
            if problem is not None:
                raise UntrustedFileError(shown, str(entry), problem)


def check_all_trusted(paths: Iterable[str | Path]) -> None:
    for path in paths:
        check_trusted(path)
