"""Which kernel headers bcc will compile against, and whether they match the running kernel."""

from __future__ import annotations

import functools
import logging
import os
import re
from pathlib import Path

import attrs

from engine.errors import EnvironmentProblem

log = logging.getLogger(__name__)

_UTS = re.compile(r'#define\s+UTS_RELEASE\s+"([^"]+)"')
MODULES_DIR = Path("/lib/modules")
# Where distributions put the headers that /lib/modules/RELEASE/build leads to.
SOURCES_DIR = Path("/usr/src")


@attrs.define
class KernelHeaders:
    """Headers bcc compiles against; says once if they are not the running kernel's."""

    path: Path
    release: str | None  # the release the headers were made for, when they say
    running: str
    _warned: bool = attrs.field(default=False, init=False, eq=False, repr=False)

    @property
    def matches(self) -> bool:
        return self.release == self.running

    def warn_if_mismatched(self) -> None:
        """Say once that struct layouts from these headers may be wrong."""
        if self.matches or self._warned:
            return
        self._warned = True
        log.warning(
            "bcc compiles against kernel headers for %s, but the running kernel is %s: "
            "kernel structs are read through the running kernel's layouts from BTF instead of "
            "those headers' (docs/btf.md)",
            self.release or "an unknown release",
            self.running,
        )


@functools.cache
def process_headers() -> KernelHeaders:
    """The headers of this process's compiles, found once: warnings about them come once.

    Not cached when none are found (EnvironmentProblem), so a later call looks again.
    """
    return find_kernel_headers()


def find_kernel_headers(modules_dir: Path = MODULES_DIR) -> KernelHeaders:
    """Where bcc looks ($BCC_KERNEL_SOURCE, else /lib/modules/$(uname -r)/build)."""
    running = os.uname().release
    env = os.environ.get("BCC_KERNEL_SOURCE")
    candidates = [Path(env)] if env else []
    candidates += [modules_dir / running / "build", modules_dir / running / "source"]
    for build in candidates:
        if (build / "include/linux/kconfig.h").is_file() or (build / "Makefile").is_file():
            return KernelHeaders(build, _release_of(build), running)
    raise EnvironmentProblem(
        f"no kernel headers for bcc at {modules_dir / running / 'build'}: install "
        f"linux-headers-{running} (or run scripts/setup, which links the closest Debian headers)"
    )


def _release_of(build: Path) -> str | None:
    try:
        text = (build / "include/generated/utsrelease.h").read_text()
    except OSError:
        return None
    match = _UTS.search(text)
    return match.group(1) if match else None
