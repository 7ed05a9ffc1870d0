"""Which kernel headers bcc will compile against, and whether they match the running kernel."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import attrs

from engine.errors import EnvironmentProblem

log = logging.getLogger(__name__)

_UTS = re.compile(r'#define\s+UTS_RELEASE\s+"([^"]+)"')


@attrs.frozen
class KernelHeaders:
    path: Path
    release: str | None  # the release the headers were made for, when they say
    running: str

    @property
    def matches(self) -> bool:
        return self.release == self.running


def find_kernel_headers(modules_dir: Path = Path("/lib/modules")) -> KernelHeaders:
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


_warned = False


def warn_if_mismatched(headers: KernelHeaders) -> None:
    """Say once per process that struct layouts from these headers may be wrong."""
    global _warned  # noqa: PLW0603 - a once-per-process warning is the point
    if headers.matches or _warned:
        return
    _warned = True
    log.warning(
        "bcc compiles against kernel headers for %s, but the running kernel is %s: "
        "struct layouts from those headers may be wrong; use the __btf types (docs/btf.md) "
        "to read kernel structs",
        headers.release or "an unknown release",
        headers.running,
    )
